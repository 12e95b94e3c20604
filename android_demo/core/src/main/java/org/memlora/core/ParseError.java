package org.memlora.core;

/** The model output is not usable for this op (runtimes.memory.parse.ParseError); the message says why. */
public class ParseError extends IllegalArgumentException {
    public ParseError(String reason) {
        super(reason);
    }
}
