// Every default Tidemark uses, in one place. Schemas refer here; nothing else hard-codes a tunable.
export const DEFAULTS = {
  ports: { processServer: 7410, masterTarget: 7420 },
  agent: {
    blockSize: 4096,
    cycleIntervalMs: 2000,
    /** Largest differential the agent writes; bounds memory and makes initial sync resumable. */
    maxDiffBytes: 32 * 1024 * 1024,
    /** Unacknowledged bytes on disk in the journal before the agent stops capturing new data. */
    journalQuotaBytes: 1024 * 1024 * 1024,
    /** A resync compares and journals this much of the volume at a time; its cursor is durable after each. */
    resyncWindowBytes: 64 * 1024 * 1024,
    tracker: 'scan',
    capture: 'none',
    /** Process server unreachable this long: bitmap mode (only the dirty map is kept). */
    bitmapAfterMs: 5 * 60 * 1000,
    reflinkKeep: 0,
    freezeTimeoutMs: 10_000,
    freezeTag: 'app',
    /** Background verify (agent/background-verify.ts): always on, capped, a pass every hour. */
    verify: {
      background: true,
      /** Source bytes compared per second (the master target re-reads as much of the replica). */
      bytesPerSecond: 16 * 1024 * 1024,
      /** After the agent first protects a volume, before the first pass (the initial sync comes first). */
      startDelayMs: 10 * 60 * 1000,
      /** From the end of one pass to the start of the next. */
      intervalMs: 60 * 60 * 1000,
    },
    blocktrace: {
      /** Per CPU, per volume. At ~60 bytes an event: ~70k writes per CPU between drains or during a restart. */
      bufferKiB: 4096,
      /** Between drains of an idle or moderately busy volume; a filling buffer is drained within 20 ms. */
      drainIntervalMs: 250,
    },
    /** Data mode (tracker "data", agent/trackers/data.ts), per volume. */
    data: {
      /** Kernel ring: holds writes (with their data) until the reader takes them. */
      ringMiB: 128,
      /** Records the reader may hold for the agent (during a resync, a slow journal); past it: re-read later. */
      queueMiB: 512,
      /** SCHED_FIFO priority of the reader thread, so its wake-ups are not delayed (0: ordinary). */
      fifoPriority: 1,
      /**
       * How often the stream is collected into a differential (each one a CRASH point), instead of
       * cycleIntervalMs: small differentials pass through the process server and master target while the
       * next is collected, so a write reaches the replica in well under a second at tens of MB/s.
       */
      collectIntervalMs: 250,
    },
  },
  processServer: {
    compression: 'lz4',
    /** LZ4 that saves less than this share of the bytes (process-server/compressor.ts) is not worth its CPU. */
    compressionMinSavingPercent: 10,
    /** Cache quota, backpressure and health thresholds (process-server/health.ts); all % are of the quota, free. */
    cache: {
      /** Of the cache filesystem's size; `cache.quotaBytes` (no default) caps it further. */
      quotaPercent: 80,
      /** InMage's process-server cache alerts: warning under 30% free, critical under 25%. */
      warningFreePercent: 30,
      criticalFreePercent: 25,
      /** New differentials wait (up to maxAcceptDelayMs) from here... */
      slowBelowFreePercent: 25,
      /** ...agents are told to stop here, and to resume once this much is free again. */
      stopBelowFreePercent: 10,
      resumeAboveFreePercent: 20,
      maxAcceptDelayMs: 1000,
      /** Oldest differential not yet forwarded (InMage: 30 and 45 minutes). */
      backlogWarningMs: 30 * 60 * 1000,
      backlogCriticalMs: 45 * 60 * 1000,
    },
    /** How often the cache filesystem is measured (statfs); usage is re-evaluated on every change anyway. */
    cacheCheckIntervalMs: 1000,
  },
  masterTarget: {
    /** The filesystems the master target writes to (state, replicas, snapshots): measured every interval. */
    space: { warningFreePercent: 10, criticalFreePercent: 5, checkIntervalMs: 1000 },
    retention: {
      window: '72h',
      /** App-consistent points (tagged) are kept, unthinned, this long. */
      appWindow: '7d',
      /** Every point for the last hour, one a minute for a day, one an hour after that (Zerto-like). */
      tiers: [{ after: '1h', every: '1m' }, { after: '24h', every: '1h' }],
      onFull: 'purge',
      maintenanceIntervalMs: 10_000,
    },
    /** The bucket tier (docs/OPERATIONS.md, object store). */
    objectStore: {
      prefix: 'tidemark',
      region: 'us-east-1',
      /** A base image this often: the bucket's newest recoverable point lags by at most this (plus upload). */
      imageInterval: '1h',
      /** Every this many images a full one (older history can then expire without its base). */
      fullEvery: 24,
      pollIntervalMs: 2000,
      partSizeMiB: 8,
      concurrency: 4,
    },
  },
  transfer: {
    /** Differentials sent but not yet acknowledged, per volume. */
    window: 8,
    reconnectMinMs: 200,
    reconnectMaxMs: 5000,
    /**
     * Largest differential (uncompressed bytes) a process server or master target takes: the largest an
     * agent can be configured to write (a resync window, `resyncWindowBytes` at most 1 GiB).
     */
    maxDiffBytes: 1024 * 1024 * 1024,
  },
  /** Every TLS port (common/tls-listener.ts): bounds on what unauthenticated clients can hold. */
  listener: {
    handshakeTimeoutMs: 10_000,
    maxConnections: 1024,
    maxPerAddress: 128,
  },
  statusHost: '127.0.0.1',
} as const;
