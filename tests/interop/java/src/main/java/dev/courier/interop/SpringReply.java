package dev.courier.interop;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.requestreply.ReplyingKafkaTemplate;
import org.springframework.kafka.requestreply.RequestReplyFuture;

/** Sends an `echo` command with ReplyingKafkaTemplate and checks Courier's reply. */
public final class SpringReply {
    public static void main(String[] args) {
        int code = 0;
        try {
            run(args[0], args[1]);
        } catch (Exception e) {
            e.printStackTrace();
            code = 1;
        }
        // Kafka and Spring leave non-daemon threads behind; the verdict is in.
        System.exit(code);
    }

    private static void run(String bootstrap, String prefix) throws Exception {
        String replyTopic = prefix + ".replies";
        var producers = new DefaultKafkaProducerFactory<String, String>(Map.of(
                ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class,
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class));
        var consumers = new DefaultKafkaConsumerFactory<String, String>(Map.of(
                ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ConsumerConfig.GROUP_ID_CONFIG, "spring-interop-" + UUID.randomUUID(),
                ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest",
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class));
        var container = new KafkaMessageListenerContainer<>(consumers, new ContainerProperties(replyTopic));
        var template = new ReplyingKafkaTemplate<>(producers, container);
        template.setDefaultReplyTimeout(Duration.ofSeconds(30));
        template.start();
        try {
            if (!template.waitForAssignment(Duration.ofSeconds(30))) {
                throw new IllegalStateException("reply container was not assigned");
            }
            String id = UUID.randomUUID().toString();
            var record = new ProducerRecord<String, String>(prefix + ".commands", id, "{\"hello\":\"spring\"}");
            record.headers()
                    .add("ce_specversion", bytes("1.0"))
                    .add("ce_id", bytes(id))
                    .add("ce_source", bytes("//spring-interop"))
                    .add("ce_type", bytes("echo"))
                    .add("content-type", bytes("application/json"));
            RequestReplyFuture<String, String, String> future = template.sendAndReceive(record);
            ConsumerRecord<String, String> reply = future.get(30, TimeUnit.SECONDS);
            String value = reply.value();
            if (!value.contains("\"state\":\"completed\"") || !value.contains("\"result\":{\"echo\":{\"hello\":\"spring\"}}")
                    || !value.contains(id)) {
                throw new IllegalStateException("unexpected reply: " + value);
            }
            System.out.println("{\"spring_interop\": \"ok\", \"reply_topic\": \"" + reply.topic() + "\"}");
        } finally {
            template.stop();
            producers.destroy();
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
