package dev.courier.peers;

/** How a worker's run ends; the first one reported wins. */
sealed interface Outcome {
    /** {@code --expect} results acknowledged and every handled offset committed. */
    record Done(long results) implements Outcome {}

    /** SIGTERM (or Ctrl-C): shut down cleanly, exit as the JVM's shutdown decides. */
    record Stopped() implements Outcome {}

    /** Something the worker cannot go on from; printed to stderr, exit 1. */
    record Failed(String why, Throwable cause) implements Outcome {}
}
