package dev.courier.peers;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;

import dev.courier.peers.tools.Seed;
import dev.courier.peers.tools.Topics;
import dev.courier.peers.tools.Verify;

/**
 * Entry point: {@code Main <worker> flags...} runs one peer worker; {@code topics},
 * {@code seed} and {@code verify} are the smoke run's tools. Exit codes: 0 done (or
 * stopped by SIGTERM), 1 failed, 2 bad command line.
 */
public final class Main {
    static final String USAGE = """
            usage: Main <raw|spring|spring-eos|pc> --bootstrap HOST:PORT --commands TOPIC --results TOPIC --group GROUP
                        [--handler-ms N] [--concurrency N] [--max-concurrency N] [--expect N]
                   Main topics create|delete --bootstrap HOST:PORT [--partitions N] TOPIC...
                   Main seed --bootstrap HOST:PORT --topic TOPIC --count N [--keys N] [--size BYTES]
                   Main verify --bootstrap HOST:PORT --commands TOPIC --results TOPIC [--label NAME]""";

    private Main() {}

    public static void main(String[] args) {
        int code;
        try {
            code = run(args);
        } catch (Flags.UsageError e) {
            System.err.println("peers: " + e.getMessage() + "\n" + USAGE);
            code = 2;
        } catch (Exception e) {
            System.err.println("peers: " + because(e));
            code = 1;
        }
        if (code != Integer.MIN_VALUE) {
            // Kafka and Spring leave non-daemon threads behind; the verdict is in.
            System.exit(code);
        }
    }

    /** Returns the exit code, or MIN_VALUE when SIGTERM's shutdown is already ending the JVM. */
    private static int run(String[] args) throws Exception {
        if (args.length == 0) {
            throw new Flags.UsageError("no subcommand");
        }
        List<String> rest = Arrays.asList(args).subList(1, args.length);
        return switch (args[0]) {
            case "raw", "spring", "spring-eos", "pc" -> runWorker(Job.from(args[0], Flags.parse(rest, Job.FLAGS)));
            case "topics" -> Topics.run(rest);
            case "seed" -> Seed.run(rest);
            case "verify" -> Verify.run(rest);
            default -> throw new Flags.UsageError("unknown subcommand '" + args[0] + "'");
        };
    }

    private static int runWorker(Job job) throws Exception {
        var outcome = new CompletableFuture<Outcome>();
        var closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            outcome.complete(new Outcome.Stopped());
            awaitQuietly(closed);
        }, "sigterm"));
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, job.bootstrap()));
             var progress = new Progress(job, admin, outcome)) {
            var readiness = new Readiness(partitions(admin, job.commands()), job.consumers());
            Outcome end;
            try (Worker worker = create(job, readiness, progress)) {
                try {
                    worker.start();
                } catch (Exception e) {
                    progress.failed("starting the " + job.worker() + " worker", e);
                }
                progress.watch(worker::broken);
                end = outcome.join();
                if (end instanceof Outcome.Done done) {
                    System.out.println("done " + done.results());
                    System.out.flush();
                }
            } finally {
                closed.countDown();
            }
            return exitCode(job, end);
        }
    }

    private static Worker create(Job job, Readiness readiness, Progress progress) {
        return switch (job.worker()) {
            case "raw" -> new RawWorker(job, readiness, progress);
            case "spring", "spring-eos" -> new SpringWorker(job, readiness, progress);
            case "pc" -> new PcWorker(job, readiness, progress);
            default -> throw new IllegalArgumentException(job.worker());
        };
    }

    private static int exitCode(Job job, Outcome end) {
        if (end instanceof Outcome.Failed failed) {
            System.err.println("peers: " + job.worker() + ": " + failed.why()
                    + (failed.cause() == null ? "" : ": " + failed.cause()));
            if (failed.cause() != null) {
                failed.cause().printStackTrace();
            }
            return 1;
        }
        return end instanceof Outcome.Stopped ? Integer.MIN_VALUE : 0;
    }

    /** Fails early and clearly on a missing topic, rather than a worker waiting for it forever. */
    private static int partitions(Admin admin, String topic) throws Exception {
        try {
            return admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS)
                    .get(topic).partitions().size();
        } catch (ExecutionException e) {
            if (e.getCause() instanceof UnknownTopicOrPartitionException) {
                throw new IllegalStateException("commands topic '" + topic + "' does not exist", e);
            }
            throw e;
        }
    }

    /** The message and its causes on one line: start-up errors are the user's to fix, not ours to trace. */
    private static String because(Throwable e) {
        var why = new StringBuilder(String.valueOf(e.getMessage()));
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            String more = String.valueOf(c.getMessage());
            if (!why.toString().contains(more)) {
                why.append(": ").append(more);
            }
        }
        return why.toString();
    }

    private static void awaitQuietly(CountDownLatch latch) {
        try {
            latch.await(60, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
