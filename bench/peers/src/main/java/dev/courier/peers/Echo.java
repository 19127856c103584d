package dev.courier.peers;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;

/**
 * The job of a Courier worker whose handler echoes its input, done the same way in every
 * peer: parse the payload (a real parse, as Courier does, not a byte copy), optionally
 * block like a slow handler, and shape the result record Courier would publish.
 *
 * <p>Frameworks differ in how they send the {@link Reply}, so this only builds it.
 */
public final class Echo {
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The result record's parts: key and {@code ce_subject} tie it to its command. */
    public record Reply(byte[] key, byte[] subject, byte[] value) {
        public static final String SUBJECT_HEADER = "ce_subject";
    }

    private Echo() {}

    /**
     * @throws BadCommand if the record is not a Courier command; the peers run on
     *         well-formed commands only, so the worker treats it as fatal
     */
    public static Reply handle(ConsumerRecord<byte[], byte[]> command, int handlerMs) {
        Header id = command.headers().lastHeader("ce_id");
        if (id == null) {
            throw new BadCommand(command, "no ce_id header");
        }
        JsonNode payload;
        try {
            payload = JSON.readTree(command.value());
        } catch (IOException | IllegalArgumentException e) {
            throw new BadCommand(command, "payload is not JSON: " + e.getMessage());
        }
        if (handlerMs > 0) {
            sleep(handlerMs);
        }
        ObjectNode result = JSON.createObjectNode();
        result.put("id", new String(id.value(), StandardCharsets.UTF_8));
        result.put("state", "completed");
        result.set("result", payload);
        return new Reply(command.key(), id.value(), bytes(result));
    }

    /** A blocking sleep, the way a user of these frameworks blocks in a handler. */
    private static void sleep(int ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted in the handler", e);
        }
    }

    private static byte[] bytes(JsonNode node) {
        try {
            return JSON.writeValueAsBytes(node);
        } catch (IOException e) {
            throw new IllegalStateException("a parsed tree always serializes", e);
        }
    }

    public static final class BadCommand extends RuntimeException {
        BadCommand(ConsumerRecord<?, ?> record, String why) {
            super("command at " + record.topic() + "-" + record.partition() + "@" + record.offset() + ": " + why);
        }
    }
}
