package dev.courier.peers;

import java.util.List;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.messaging.Message;
import org.springframework.messaging.handler.annotation.SendTo;
import org.springframework.messaging.support.MessageBuilder;

/** The two Spring listeners, each the idiomatic shape for its guarantee. */
final class SpringListeners {
    private SpringListeners() {}

    /**
     * {@code @KafkaListener} + {@code @SendTo}, AckMode BATCH (the default): the returned
     * message is handed to the reply template and the listener moves on. Spring commits
     * the batch's offsets after the last listener call returns, without waiting for the
     * replies' acknowledgements, so a reply the broker refuses is lost with its command
     * committed: weaker than Courier, which commits a command only after its result is
     * acknowledged.
     */
    static class Replying {
        private final Job job;
        private final Progress progress;

        Replying(Job job, Progress progress) {
            this.job = job;
            this.progress = progress;
        }

        @KafkaListener(topics = "${peers.commands}")
        @SendTo("${peers.results}")
        public Message<byte[]> handle(ConsumerRecord<byte[], byte[]> command) {
            Echo.Reply reply = Echo.handle(command, job.handlerMs());
            progress.handled(command.topic(), command.partition(), command.offset());
            // byte[] header values pass through Spring's header mapper unchanged (no JSON
            // type header is added), so the result carries ce_subject and nothing else.
            return MessageBuilder.withPayload(reply.value())
                    .setHeader(KafkaHeaders.KEY, reply.key())
                    .setHeader(Echo.Reply.SUBJECT_HEADER, reply.subject())
                    .build();
        }
    }

    /**
     * A batch listener inside the container's Kafka transaction: {@code send} joins the
     * transaction the container began for this poll, and the container commits it, with
     * the batch's offsets, when the listener returns. There is no need to wait for the
     * sends: {@code commitTransaction} fails if any of them did, and the batch is redone.
     */
    static class BatchInTransaction {
        private final Job job;
        private final Progress progress;
        private final KafkaTemplate<byte[], byte[]> template;

        BatchInTransaction(Job job, Progress progress, KafkaTemplate<byte[], byte[]> template) {
            this.job = job;
            this.progress = progress;
            this.template = template;
        }

        @KafkaListener(topics = "${peers.commands}")
        public void handle(List<ConsumerRecord<byte[], byte[]>> commands) {
            for (ConsumerRecord<byte[], byte[]> command : commands) {
                Echo.Reply reply = Echo.handle(command, job.handlerMs());
                var record = new ProducerRecord<>(job.results(), reply.key(), reply.value());
                record.headers().add(Echo.Reply.SUBJECT_HEADER, reply.subject());
                template.send(record);
                progress.handled(command.topic(), command.partition(), command.offset());
            }
        }
    }
}
