package org.memlora.core;

/** The bundle is missing, malformed, does not match its checksums or was exported for another runtime version. */
public class BundleError extends RuntimeException {
    public BundleError(String msg) {
        super(msg);
    }
}
