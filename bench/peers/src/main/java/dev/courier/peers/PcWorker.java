package dev.courier.peers;

import java.util.List;
import java.util.Optional;

import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Confluent's Parallel Consumer: one consumer and one producer, with up to
 * {@code --max-concurrency} commands in flight, one at a time per key
 * ({@code ProcessingOrder.KEY}). {@code pollAndProduce} sends the result through PC's
 * producer and blocks the handler's thread until the broker acknowledges it; only then is
 * the command's offset committable. Commits are PC's default,
 * {@code PERIODIC_CONSUMER_ASYNCHRONOUS}: commitAsync from the poller every commit
 * interval (5 s by default), with the offsets of finished commands above the lowest
 * unfinished one encoded in the commit's metadata.
 */
final class PcWorker implements Worker {
    private final Job job;
    private final Readiness readiness;
    private final Progress progress;
    private final ParallelStreamProcessor<byte[], byte[]> pc;
    private volatile boolean closing;

    PcWorker(Job job, Readiness readiness, Progress progress) {
        this.job = job;
        this.readiness = readiness;
        this.progress = progress;
        var consumer = new KafkaConsumer<byte[], byte[]>(Clients.consumer(job));
        var options = ParallelConsumerOptions.<byte[], byte[]>builder()
                .consumer(consumer)
                .producer(new KafkaProducer<>(Clients.producer(job)))
                .ordering(ProcessingOrder.KEY)
                .maxConcurrency(job.maxConcurrency())
                .build();
        this.pc = ParallelStreamProcessor.createEosStreamProcessor(options);
    }

    @Override
    public void start() {
        pc.subscribe(List.of(job.commands()), readiness.listener(pc));
        pc.pollAndProduce(context -> reply(context.getSingleConsumerRecord()), produced -> progress.acked());
    }

    private ProducerRecord<byte[], byte[]> reply(ConsumerRecord<byte[], byte[]> command) {
        Echo.Reply reply = Echo.handle(command, job.handlerMs());
        var record = new ProducerRecord<>(job.results(), reply.key(), reply.value());
        record.headers().add(Echo.Reply.SUBJECT_HEADER, reply.subject());
        progress.handled(command.topic(), command.partition(), command.offset());
        return record;
    }

    @Override
    public Optional<String> broken() {
        if (closing || !pc.isClosedOrFailed()) {
            return Optional.empty();
        }
        Exception cause = pc instanceof io.confluent.parallelconsumer.internal.AbstractParallelEoSStreamProcessor<?, ?> p
                ? p.getFailureCause() : null;
        return Optional.of("Parallel Consumer stopped on its own" + (cause == null ? "" : ": " + cause));
    }

    @Override
    public void close() {
        closing = true;
        // Without draining, as PC's close() does: in-flight commands finish, the rest are
        // left for the next member, and the last commit is made before the clients close.
        pc.close();
    }
}
