package dev.courier.peers.tools;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import dev.courier.peers.Flags;

/**
 * {@code verify}: reads a whole commands topic and its results topic and checks what a
 * Courier caller relies on: exactly one result per command (by {@code ce_subject}), keyed
 * like its command, carrying the command's id and payload, and per key in the order the
 * commands were sent ({@code seq} increasing). Prints one line: ok with the throughput
 * (results over the span between the first and last result's timestamp), or what failed.
 *
 * <p>Reads with {@code read_committed}, as a downstream consumer of a transactional
 * producer would; for the other workers it reads the same records.
 */
public final class Verify {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int EXAMPLES = 3;

    private record Command(byte[] key, JsonNode payload) {}

    private Verify() {}

    public static int run(List<String> args) throws Exception {
        Flags flags = Flags.parse(args, Set.of("bootstrap", "commands", "results", "label"));
        String bootstrap = flags.required("bootstrap");
        String name = flags.optional("label").map(l -> "verify " + l).orElse("verify");
        var commands = new HashMap<String, Command>();
        for (var r : readAll(bootstrap, flags.required("commands"))) {
            commands.put(text(r.headers().lastHeader("ce_id")), new Command(r.key(), JSON.readTree(r.value())));
        }
        var results = readAll(bootstrap, flags.required("results"));
        var problems = check(commands, results);
        if (!problems.isEmpty()) {
            System.out.println(name + ": FAILED: " + String.join("; ", problems));
            return 1;
        }
        long first = results.stream().mapToLong(ConsumerRecord::timestamp).min().orElse(0);
        long last = results.stream().mapToLong(ConsumerRecord::timestamp).max().orElse(0);
        double span = Math.max(1, last - first) / 1000.0;
        var headers = new TreeSet<String>();
        results.forEach(r -> r.headers().forEach(h -> headers.add(h.key())));
        System.out.printf("%s: ok: %d results for %d commands; %.0f results/s (span %.2f s); result headers %s%n",
                name, results.size(), commands.size(), results.size() / span, span, headers);
        return 0;
    }

    static List<String> check(Map<String, Command> commands, List<ConsumerRecord<byte[], byte[]>> results) throws IOException {
        var seen = new HashMap<String, Integer>();
        var wrongKey = new ArrayList<String>();
        var wrongBody = new ArrayList<String>();
        var outOfOrder = new ArrayList<String>();
        var unknown = new ArrayList<String>();
        var lastSeq = new HashMap<String, Long>();
        for (var r : results) {
            String subject = text(r.headers().lastHeader("ce_subject"));
            seen.merge(subject, 1, Integer::sum);
            Command cmd = commands.get(subject);
            if (cmd == null) {
                unknown.add(at(r) + " ce_subject=" + subject);
                continue;
            }
            if (!Arrays.equals(cmd.key(), r.key())) {
                wrongKey.add(at(r));
            }
            JsonNode body = JSON.readTree(r.value());
            if (!subject.equals(body.path("id").asText()) || !"completed".equals(body.path("state").asText())
                    || !cmd.payload().equals(body.get("result"))) {
                wrongBody.add(at(r));
            }
            String key = new String(r.key() == null ? new byte[0] : r.key(), StandardCharsets.UTF_8);
            long seq = cmd.payload().path("seq").asLong();
            Long before = lastSeq.put(key, seq);
            if (before != null && before >= seq) {
                outOfOrder.add(key + ": " + before + " then " + seq + " at " + at(r));
            }
        }
        var missing = commands.keySet().stream().filter(id -> !seen.containsKey(id)).toList();
        var duplicated = seen.entrySet().stream().filter(e -> e.getValue() > 1).map(Map.Entry::getKey).toList();
        var problems = new ArrayList<String>();
        report(problems, "commands without a result", missing);
        report(problems, "commands with more than one result", duplicated);
        report(problems, "results for no command", unknown);
        report(problems, "results keyed unlike their command", wrongKey);
        report(problems, "results whose body is not {id, completed, the payload}", wrongBody);
        report(problems, "results out of per-key order", outOfOrder);
        return problems;
    }

    private static void report(List<String> problems, String what, List<String> cases) {
        if (!cases.isEmpty()) {
            problems.add(cases.size() + " " + what + " (e.g. " + String.join(", ", cases.subList(0, Math.min(EXAMPLES, cases.size()))) + ")");
        }
    }

    /** Every record of the topic, each partition in offset order, up to its end when called. */
    static List<ConsumerRecord<byte[], byte[]>> readAll(String bootstrap, String topic) {
        Map<String, Object> config = Map.of(
                ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class,
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        try (var consumer = new KafkaConsumer<byte[], byte[]>(config)) {
            var partitions = consumer.partitionsFor(topic).stream().map(p -> new TopicPartition(topic, p.partition())).toList();
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            Map<TopicPartition, Long> end = new TreeMap<>((a, b) -> Integer.compare(a.partition(), b.partition()));
            end.putAll(consumer.endOffsets(partitions));
            var byPartition = new TreeMap<Integer, List<ConsumerRecord<byte[], byte[]>>>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (end.entrySet().stream().anyMatch(e -> consumer.position(e.getKey()) < e.getValue())) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("verify: could not read " + topic + " to its end in 60 s");
                }
                for (var r : consumer.poll(Duration.ofMillis(200))) {
                    byPartition.computeIfAbsent(r.partition(), p -> new ArrayList<>()).add(r);
                }
            }
            var all = new ArrayList<ConsumerRecord<byte[], byte[]>>();
            byPartition.values().forEach(all::addAll);
            return all;
        }
    }

    private static String at(ConsumerRecord<?, ?> r) {
        return r.topic() + "-" + r.partition() + "@" + r.offset();
    }

    private static String text(Header h) {
        return h == null ? "(none)" : new String(h.value(), StandardCharsets.UTF_8);
    }
}
