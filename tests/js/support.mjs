// What both client scripts need: failing loudly, and waiting for an SDK event.

export function fail(message) {
    console.error(`FAIL: ${message}`);
    process.exit(1);
}

// Resolves with the first emission of `event` whose arguments satisfy `predicate`.
export function waitFor(emitter, event, predicate, what, timeoutMs) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            emitter.off(event, listener);
            reject(new Error(`timed out waiting for ${what}`));
        }, timeoutMs);
        function listener(...args) {
            if (predicate(...args)) {
                clearTimeout(timer);
                emitter.off(event, listener);
                resolve(args);
            }
        }
        emitter.on(event, listener);
    });
}
