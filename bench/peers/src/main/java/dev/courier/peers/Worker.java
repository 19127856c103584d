package dev.courier.peers;

import java.util.Optional;

/**
 * One peer: it runs on threads of its own (or its framework's) from {@link #start} until
 * {@link #close}, reporting to {@link Readiness} and {@link Progress} as it goes.
 */
interface Worker extends AutoCloseable {
    void start() throws Exception;

    /** Why the worker has stopped working on its own, if it has (a framework's fatal state). */
    default Optional<String> broken() {
        return Optional.empty();
    }

    /** Stops consuming, lets in-flight results finish where the framework does, closes clients. */
    @Override
    void close();
}
