package dev.courier.peers;

import java.util.Set;

/**
 * What every worker is told, whatever its framework: one typed value built from the
 * flags, so each default is written once (here) and the README can list them.
 *
 * @param expect results to wait for before exiting, or -1 to run until SIGTERM
 */
public record Job(String worker, String bootstrap, String commands, String results, String group,
                  int handlerMs, int concurrency, int maxConcurrency, long expect) {

    public static final Set<String> FLAGS = Set.of(
            "bootstrap", "commands", "results", "group", "handler-ms", "concurrency", "max-concurrency", "expect");

    /** Spring's listener containers: one consumer thread per partition of a 6-partition topic. */
    static final int DEFAULT_CONCURRENCY = 6;
    /** Courier's default max in flight, so Parallel Consumer gets the same parallelism. */
    static final int DEFAULT_MAX_CONCURRENCY = 1024;

    public static Job from(String worker, Flags flags) {
        var job = new Job(worker, flags.required("bootstrap"), flags.required("commands"), flags.required("results"),
                flags.required("group"), flags.integer("handler-ms", 0),
                flags.integer("concurrency", DEFAULT_CONCURRENCY), flags.integer("max-concurrency", DEFAULT_MAX_CONCURRENCY),
                flags.optionalCount("expect"));
        if (job.concurrency < 1 || job.maxConcurrency < 1) {
            throw new Flags.UsageError("--concurrency and --max-concurrency must be at least 1");
        }
        return job;
    }

    /** How many consumers this worker runs in one process: Spring's containers run one per thread. */
    int consumers() {
        return worker.startsWith("spring") ? concurrency : 1;
    }
}
