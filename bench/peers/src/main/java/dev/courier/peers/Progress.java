package dev.courier.peers;

import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * Decides when a worker with {@code --expect N} is done: N results acknowledged by the
 * broker, and every command offset the worker handled committed for its group.
 *
 * <p>"Committed" is read back from the broker (the group's offsets through the admin
 * client), not taken from each framework's word: Spring's transactional commits and
 * Parallel Consumer's periodic ones have no callback a user sees, and the broker's view
 * is the one a restarted worker would resume from.
 */
final class Progress implements AutoCloseable {
    /** How often to ask the broker; the runs measure throughput from record timestamps, not from this. */
    private static final long CHECK_MS = 200;

    private final Job job;
    private final Admin admin;
    private final CompletableFuture<Outcome> outcome;
    private final Map<TopicPartition, Long> handled = new ConcurrentHashMap<>();
    private final AtomicLong acked = new AtomicLong();
    private final ScheduledExecutorService ticker = Executors.newSingleThreadScheduledExecutor(r -> {
        var t = new Thread(r, "progress");
        t.setDaemon(true);
        return t;
    });

    Progress(Job job, Admin admin, CompletableFuture<Outcome> outcome) {
        this.job = job;
        this.admin = admin;
        this.outcome = outcome;
    }

    /** The command at this offset has been handled and its result handed to the producer. */
    void handled(String topic, int partition, long offset) {
        handled.merge(new TopicPartition(topic, partition), offset, Math::max);
    }

    /** The broker acknowledged one result. */
    void acked() {
        acked.incrementAndGet();
    }

    void failed(String why, Throwable cause) {
        outcome.complete(new Outcome.Failed(why, cause));
    }

    /** Watches for the end of the run and for a worker that broke on its own. */
    void watch(Supplier<Optional<String>> broken) {
        ticker.scheduleWithFixedDelay(() -> {
            try {
                broken.get().ifPresent(why -> failed(why, null));
                if (job.expect() >= 0 && acked.get() >= job.expect() && committedAll()) {
                    outcome.complete(new Outcome.Done(job.expect()));
                }
            } catch (Exception e) {
                failed("reading the group's committed offsets", e);
            }
        }, CHECK_MS, CHECK_MS, TimeUnit.MILLISECONDS);
    }

    private boolean committedAll() throws Exception {
        if (handled.isEmpty()) {
            return job.expect() == 0;
        }
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(job.group()).partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
        for (var e : handled.entrySet()) {
            OffsetAndMetadata c = committed.get(e.getKey());
            if (c == null || c.offset() <= e.getValue()) {
                return false;
            }
        }
        return true;
    }

    @Override
    public void close() {
        ticker.shutdownNow();
    }
}
