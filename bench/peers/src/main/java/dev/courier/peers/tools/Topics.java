package dev.courier.peers.tools;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;

import dev.courier.peers.Flags;

/** {@code topics create|delete}: the smoke run's topics, made and removed by name only. */
public final class Topics {
    private Topics() {}

    public static int run(List<String> args) throws Exception {
        Flags flags = Flags.parse(args, Set.of("bootstrap", "partitions"));
        List<String> words = flags.positional();
        if (words.size() < 2) {
            throw new Flags.UsageError("topics needs create|delete and at least one topic");
        }
        List<String> names = words.subList(1, words.size());
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, flags.required("bootstrap")))) {
            switch (words.get(0)) {
                case "create" -> {
                    int partitions = flags.integer("partitions", 6);
                    var topics = names.stream().map(n -> new NewTopic(n, Optional.of(partitions), Optional.empty())).toList();
                    admin.createTopics(topics).all().get(60, TimeUnit.SECONDS);
                }
                case "delete" -> admin.deleteTopics(names).all().get(60, TimeUnit.SECONDS);
                default -> throw new Flags.UsageError("topics takes create or delete, not '" + words.get(0) + "'");
            }
        }
        return 0;
    }
}
