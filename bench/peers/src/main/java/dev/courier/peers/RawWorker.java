package dev.courier.peers;

import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;

/**
 * The ceiling: one KafkaConsumer and one KafkaProducer in one poll loop, the shortest
 * at-least-once program kafka-clients allows. Results are sent without waiting; every
 * {@value #COMMIT_MS} ms the producer is flushed (so every result sent so far is
 * acknowledged) and only then are the consumed offsets committed, asynchronously.
 *
 * <p>Handlers run one at a time on the loop's thread: with {@code --handler-ms} this
 * worker does at most 1000 / handler-ms commands a second, which is what a plain loop is.
 */
final class RawWorker implements Worker {
    static final long COMMIT_MS = 500;
    private static final Duration POLL = Duration.ofMillis(100);
    private static final Duration CLOSE = Duration.ofSeconds(10);

    private final Job job;
    private final Readiness readiness;
    private final Progress progress;
    private final KafkaConsumer<byte[], byte[]> consumer;
    private final KafkaProducer<byte[], byte[]> producer;
    /** Next offset to commit per partition: past the last command whose result was sent. */
    private final Map<TopicPartition, OffsetAndMetadata> toCommit = new HashMap<>();
    private final Thread loop = new Thread(this::run, "raw-loop");
    private volatile boolean stopping;
    /** The first result the broker refused; offsets past it must never be committed. */
    private volatile Exception sendError;

    RawWorker(Job job, Readiness readiness, Progress progress) {
        this.job = job;
        this.readiness = readiness;
        this.progress = progress;
        this.consumer = new KafkaConsumer<>(Clients.consumer(job));
        this.producer = new KafkaProducer<>(Clients.producer(job));
    }

    @Override
    public void start() {
        loop.start();
    }

    private void run() {
        try {
            consumer.subscribe(List.of(job.commands()), new CommitOnRevoke());
            long nextCommit = System.currentTimeMillis() + COMMIT_MS;
            while (!stopping) {
                for (ConsumerRecord<byte[], byte[]> command : consumer.poll(POLL)) {
                    send(command);
                }
                if (System.currentTimeMillis() >= nextCommit) {
                    flushThenCommit(false);
                    nextCommit = System.currentTimeMillis() + COMMIT_MS;
                }
            }
        } catch (WakeupException e) {
            // close() woke the poll; the final commit follows.
        } catch (Exception e) {
            progress.failed("raw loop", e);
            closeClients(false);
            return;
        }
        closeClients(true);
    }

    private void send(ConsumerRecord<byte[], byte[]> command) {
        Echo.Reply reply = Echo.handle(command, job.handlerMs());
        var record = new ProducerRecord<>(job.results(), reply.key(), reply.value());
        record.headers().add(Echo.Reply.SUBJECT_HEADER, reply.subject());
        producer.send(record, (meta, error) -> {
            if (error == null) {
                progress.acked();
            } else if (sendError == null) {
                sendError = error;
            }
        });
        var tp = new TopicPartition(command.topic(), command.partition());
        toCommit.put(tp, new OffsetAndMetadata(command.offset() + 1));
        progress.handled(command.topic(), command.partition(), command.offset());
    }

    /** Commits only what flush() proved acknowledged; sync on the way out, async in the loop. */
    private void flushThenCommit(boolean sync) {
        producer.flush();
        if (sendError != null) {
            // Stop rather than commit past a result that was never written.
            throw new IllegalStateException("a result was not sent", sendError);
        }
        if (toCommit.isEmpty()) {
            return;
        }
        var offsets = new HashMap<>(toCommit);
        toCommit.clear();
        if (sync) {
            consumer.commitSync(offsets);
        } else {
            // A failed async commit is repaired by the next one, which carries later offsets.
            consumer.commitAsync(offsets, (o, e) -> {
                if (e != null) {
                    System.err.println("raw: async commit failed (the next one repeats it): " + e);
                }
            });
        }
    }

    private void closeClients(boolean commit) {
        try {
            if (commit) {
                flushThenCommit(true);
            }
        } finally {
            producer.close(CLOSE);
            consumer.close(CLOSE);
        }
    }

    /** Eager rebalances take partitions away: commit what was done on them first. */
    private final class CommitOnRevoke implements ConsumerRebalanceListener {
        private final ConsumerRebalanceListener ready = readiness.listener(consumer);

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> tps) {
            ready.onPartitionsAssigned(tps);
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> tps) {
            flushThenCommit(true);
            ready.onPartitionsRevoked(tps);
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> tps) {
            // Another member owns them now: committing would be rejected, and is not ours to do.
            tps.forEach(toCommit::remove);
            ready.onPartitionsLost(tps);
        }
    }

    @Override
    public void close() {
        stopping = true;
        consumer.wakeup();
        try {
            loop.join(30_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}

