package dev.courier.peers;

import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.common.TopicPartition;

/**
 * Prints {@code ready} once the group has settled: every partition of the commands topic
 * is held by one of this process's consumers, and as many of them hold partitions as
 * can. The second condition matters for Spring, whose consumers join one after another:
 * the first one briefly holds every partition, and a harness that started timing then
 * would time the rebalances too.
 */
final class Readiness {
    private final int partitions;
    private final int consumers;
    private final Map<Object, Set<TopicPartition>> held = new HashMap<>();
    private boolean printed;

    Readiness(int partitions, int consumers) {
        this.partitions = partitions;
        this.consumers = consumers;
    }

    synchronized void assigned(Object consumer, Collection<TopicPartition> tps) {
        held.computeIfAbsent(consumer, c -> new HashSet<>()).addAll(tps);
        if (!printed && settled()) {
            printed = true;
            System.out.println("ready");
            System.out.flush();
        }
    }

    synchronized void revoked(Object consumer, Collection<TopicPartition> tps) {
        Set<TopicPartition> mine = held.get(consumer);
        if (mine != null) {
            mine.removeAll(tps);
        }
    }

    private boolean settled() {
        var all = new HashSet<TopicPartition>();
        long holding = 0;
        for (Set<TopicPartition> tps : held.values()) {
            all.addAll(tps);
            holding += tps.isEmpty() ? 0 : 1;
        }
        return all.size() == partitions && holding == Math.min(consumers, partitions);
    }

    /** For a worker with one plain consumer; Spring's consumers report through an adapter. */
    ConsumerRebalanceListener listener(Object consumer) {
        return new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                assigned(consumer, tps);
            }

            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                revoked(consumer, tps);
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> tps) {
                revoked(consumer, tps);
            }
        };
    }
}
