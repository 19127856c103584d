package dev.courier.peers.tools;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import dev.courier.peers.Flags;

/**
 * {@code seed}: produces Courier-shaped commands, as Courier's client encodes them
 * (CloudEvents binary mode headers, JSON payload), with keys {@code k0..k<keys-1>} in
 * turn and a payload {@code {"seq":i,"key":"k..","pad":"x..."}} padded to {@code --size}
 * bytes. {@code seq} lets verify check per-key order.
 */
public final class Seed {
    private Seed() {}

    public static int run(List<String> args) throws Exception {
        Flags flags = Flags.parse(args, Set.of("bootstrap", "topic", "count", "keys", "size"));
        String topic = flags.required("topic");
        int count = flags.integer("count", 0);
        int keys = Math.max(1, flags.integer("keys", 1000));
        int size = flags.integer("size", 256);
        Map<String, Object> config = Map.of(
                ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, flags.required("bootstrap"),
                ProducerConfig.LINGER_MS_CONFIG, 20,
                ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class,
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        var failure = new AtomicReference<Exception>();
        try (var producer = new KafkaProducer<byte[], byte[]>(config)) {
            for (int i = 0; i < count; i++) {
                String key = "k" + (i % keys);
                producer.send(command(topic, key, payload(i, key, size)), (meta, e) -> {
                    if (e != null) {
                        failure.compareAndSet(null, e);
                    }
                });
            }
            producer.flush();
        }
        if (failure.get() != null) {
            throw new IllegalStateException("seed: a command was not written: " + failure.get(), failure.get());
        }
        System.out.println("seeded " + count + " commands on " + topic);
        return 0;
    }

    static byte[] payload(int seq, String key, int size) {
        String head = "{\"seq\":" + seq + ",\"key\":\"" + key + "\",\"pad\":\"";
        String tail = "\"}";
        int pad = Math.max(0, size - head.length() - tail.length());
        return (head + "x".repeat(pad) + tail).getBytes(StandardCharsets.UTF_8);
    }

    private static ProducerRecord<byte[], byte[]> command(String topic, String key, byte[] payload) {
        var record = new ProducerRecord<>(topic, key.getBytes(StandardCharsets.UTF_8), payload);
        var headers = record.headers();
        header(headers, "ce_specversion", "1.0");
        header(headers, "ce_id", UUID.randomUUID().toString());
        header(headers, "ce_source", "//bench/peers");
        header(headers, "ce_type", "echo");
        header(headers, "content-type", "application/json");
        header(headers, "ce_courierversion", "1.0");
        header(headers, "ce_attempt", "1");
        header(headers, "ce_time", Instant.now().toString());
        return record;
    }

    private static void header(org.apache.kafka.common.header.Headers headers, String name, String value) {
        headers.add(name, value.getBytes(StandardCharsets.UTF_8));
    }
}
