package dev.courier.peers;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * The command line after the subcommand: {@code --name value} pairs and positional words.
 * Each subcommand names the flags it takes, so a misspelt flag is an error rather than a
 * silently ignored default (a benchmark run with the wrong concurrency measures nothing).
 */
public final class Flags {
    private final Map<String, String> values;
    private final List<String> positional;

    private Flags(Map<String, String> values, List<String> positional) {
        this.values = values;
        this.positional = positional;
    }

    public static Flags parse(List<String> args, Set<String> known) {
        var values = new HashMap<String, String>();
        var positional = new ArrayList<String>();
        for (int i = 0; i < args.size(); i++) {
            String arg = args.get(i);
            if (!arg.startsWith("--")) {
                positional.add(arg);
                continue;
            }
            String name = arg.substring(2);
            if (!known.contains(name)) {
                throw new UsageError("unknown flag --" + name + " (this subcommand takes --" + String.join(", --", known) + ")");
            }
            if (i + 1 == args.size()) {
                throw new UsageError("--" + name + " needs a value");
            }
            values.put(name, args.get(++i));
        }
        return new Flags(values, positional);
    }

    public String required(String name) {
        String v = values.get(name);
        if (v == null || v.isEmpty()) {
            throw new UsageError("--" + name + " is required");
        }
        return v;
    }

    public Optional<String> optional(String name) {
        return Optional.ofNullable(values.get(name));
    }

    public int integer(String name, int fallback) {
        String v = values.get(name);
        if (v == null) {
            return fallback;
        }
        try {
            int n = Integer.parseInt(v);
            if (n < 0) {
                throw new NumberFormatException();
            }
            return n;
        } catch (NumberFormatException e) {
            throw new UsageError("--" + name + " must be a whole number >= 0, got '" + v + "'");
        }
    }

    /** An absent flag is -1, so "not given" and "0" stay apart. */
    public long optionalCount(String name) {
        return values.containsKey(name) ? integer(name, 0) : -1;
    }

    public List<String> positional() {
        return positional;
    }

    /** A mistake in the command line: printed with the usage, exit code 2. */
    public static final class UsageError extends RuntimeException {
        public UsageError(String message) {
            super(message);
        }
    }
}
