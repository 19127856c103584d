package dev.courier.peers;

import java.util.HashMap;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The client settings every peer starts from. Everything else is the framework's default,
 * on purpose: the README lists exactly these, and a worker that needs more (a
 * transactional id) adds it where it is built.
 */
final class Clients {
    private Clients() {}

    static Map<String, Object> consumer(Job job) {
        var c = new HashMap<String, Object>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, job.bootstrap());
        c.put(ConsumerConfig.GROUP_ID_CONFIG, job.group());
        // A fresh group must read the commands produced before it started.
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Offsets are committed after the results are acknowledged, never on a timer.
        // Spring sets this itself; the raw loop and Parallel Consumer need it said.
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        // Keys and payloads stay bytes: the result's key is the command's key, unchanged.
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        return c;
    }

    static Map<String, Object> producer(Job job) {
        var p = new HashMap<String, Object>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, job.bootstrap());
        // These three are kafka-clients 4.x's defaults; they are written down so that a
        // change of client version cannot change what is measured.
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        return p;
    }
}
