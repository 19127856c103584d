package dev.courier.interop;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.requestreply.ReplyingKafkaTemplate;
import org.springframework.kafka.requestreply.RequestReplyFuture;
import org.springframework.kafka.support.TopicPartitionOffset;

/**
 * A Java caller using Spring Kafka's ReplyingKafkaTemplate, unchanged: the template adds
 * kafka_replyTopic and kafka_correlationId (and kafka_replyPartition when its reply
 * container is pinned to one partition); the caller adds only the documented
 * CloudEvents headers.
 *
 * <p>Args: bootstrap, prefix. Needs topics {@code <prefix>.replies} (any partitions) and
 * {@code <prefix>.replies.pinned} (3 partitions). Prints one JSON line and exits 0, or
 * prints why and exits 1.
 */
public final class SpringReply {
    private static final Duration REPLY_TIMEOUT = Duration.ofSeconds(30);
    private static final int PINNED_PARTITION = 2;

    public static void main(String[] args) {
        int code = 0;
        try {
            String echo = echoViaGroupContainer(args[0], args[1]);
            int pinned = failViaPinnedPartition(args[0], args[1]);
            System.out.println("{\"spring_interop\": \"ok\", \"echo_reply_topic\": \"" + echo
                    + "\", \"pinned_partition_replies\": " + pinned + "}");
        } catch (Throwable e) {
            System.err.println("spring interop FAILED: " + e);
            e.printStackTrace();
            code = 1;
        }
        // Kafka and Spring leave non-daemon threads behind; the verdict is in.
        System.exit(code);
    }

    /** echo {"hello":"spring"}; the reply container subscribes to the reply topic as a group. */
    private static String echoViaGroupContainer(String bootstrap, String prefix) throws Exception {
        var replyTopic = prefix + ".replies";
        var consumers = consumerFactory(bootstrap);
        var container = new KafkaMessageListenerContainer<>(consumers, new ContainerProperties(replyTopic));
        return withTemplate(bootstrap, container, template -> {
            String id = UUID.randomUUID().toString();
            var reply = sendAndReceive(template, command(prefix, id, id, "echo", "{\"hello\":\"spring\"}"));
            String value = reply.value();
            expect(value.contains("\"command_id\":\"" + id + "\""), "reply names another command: " + value);
            expect(value.contains("\"state\":\"completed\""), "reply is not completed: " + value);
            expect(value.contains("\"result\":{\"echo\":{\"hello\":\"spring\"}}"), "unexpected echo result: " + value);
            expect("courier.command.completed".equals(header(reply, "ce_type")), "reply ce_type: " + header(reply, "ce_type"));
            expect(id.equals(header(reply, "ce_subject")), "reply ce_subject: " + header(reply, "ce_subject"));
            return reply.topic();
        });
    }

    /**
     * fail commands whose replies must come back on the one partition the reply container
     * is pinned to (Spring sends kafka_replyPartition); with three different keys, a
     * worker that ignored the header would route some elsewhere and they would time out.
     */
    private static int failViaPinnedPartition(String bootstrap, String prefix) throws Exception {
        var replyTopic = prefix + ".replies.pinned";
        var consumers = consumerFactory(bootstrap);
        var props = new ContainerProperties(new TopicPartitionOffset(replyTopic, PINNED_PARTITION,
                TopicPartitionOffset.SeekPosition.BEGINNING));
        var container = new KafkaMessageListenerContainer<>(consumers, props);
        return withTemplate(bootstrap, container, template -> {
            var sent = new ArrayList<Map.Entry<String, RequestReplyFuture<String, String, String>>>();
            // librdkafka's default partitioner (CRC32 of the key) puts these keys on
            // partitions 0, 1 and 0 of three: only kafka_replyPartition brings them to 2.
            for (String key : List.of("spring-c", "spring-h", "spring-e")) {
                String id = UUID.randomUUID().toString();
                var record = command(prefix, id, key, "fail", "{\"code\":\"spring_fail\",\"message\":\"from spring\"}");
                sent.add(Map.entry(id, template.sendAndReceive(record)));
            }
            for (var s : sent) {
                ConsumerRecord<String, String> reply;
                try {
                    reply = s.getValue().get(REPLY_TIMEOUT.toSeconds() + 5, TimeUnit.SECONDS);
                } catch (Exception e) {
                    throw new IllegalStateException("no reply on " + replyTopic + "-" + PINNED_PARTITION
                            + " for command " + s.getKey() + " (kafka_replyPartition not honoured?)", e);
                }
                String value = reply.value();
                expect(reply.partition() == PINNED_PARTITION, "reply on partition " + reply.partition());
                expect(value.contains("\"command_id\":\"" + s.getKey() + "\""), "reply names another command: " + value);
                expect(value.contains("\"state\":\"failed\""), "reply is not failed: " + value);
                expect(value.contains("\"code\":\"spring_fail\""), "unexpected error: " + value);
            }
            return sent.size();
        });
    }

    interface Body<T> {
        T run(ReplyingKafkaTemplate<String, String, String> template) throws Exception;
    }

    private static <T> T withTemplate(String bootstrap, KafkaMessageListenerContainer<String, String> container,
            Body<T> body) throws Exception {
        var producers = new DefaultKafkaProducerFactory<String, String>(Map.of(
                ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class,
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class));
        var template = new ReplyingKafkaTemplate<>(producers, container);
        template.setDefaultReplyTimeout(REPLY_TIMEOUT);
        template.start();
        try {
            if (!template.waitForAssignment(REPLY_TIMEOUT)) {
                throw new IllegalStateException("reply container was not assigned");
            }
            return body.run(template);
        } finally {
            template.stop();
            producers.destroy();
        }
    }

    private static DefaultKafkaConsumerFactory<String, String> consumerFactory(String bootstrap) {
        return new DefaultKafkaConsumerFactory<>(Map.of(
                ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ConsumerConfig.GROUP_ID_CONFIG, "spring-interop-" + UUID.randomUUID(),
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest",
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class));
    }

    /** A command with the documented CloudEvents headers only. */
    private static ProducerRecord<String, String> command(String prefix, String id, String key, String type, String json) {
        var record = new ProducerRecord<>(prefix + ".commands", key, json);
        record.headers()
                .add("ce_specversion", bytes("1.0"))
                .add("ce_id", bytes(id))
                .add("ce_source", bytes("//spring-interop"))
                .add("ce_type", bytes(type))
                .add("content-type", bytes("application/json"));
        return record;
    }

    private static ConsumerRecord<String, String> sendAndReceive(
            ReplyingKafkaTemplate<String, String, String> template, ProducerRecord<String, String> record) throws Exception {
        RequestReplyFuture<String, String, String> future = template.sendAndReceive(record);
        return future.get(REPLY_TIMEOUT.toSeconds() + 5, TimeUnit.SECONDS);
    }

    private static String header(ConsumerRecord<?, ?> record, String name) {
        Header h = record.headers().lastHeader(name);
        return h == null || h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    private static void expect(boolean ok, String message) {
        if (!ok) {
            throw new IllegalStateException(message);
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
