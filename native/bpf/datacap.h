// Layout shared by the BPF program (datacap.bpf.c) and its loader (native/src/datacap.c); the record
// layout is also parsed in native/datacap.ts. docs/FORMAT.md "Data-mode ring records".
#ifndef DATACAP_H
#define DATACAP_H

#define DC_PIECE 4096        // data bytes per ring record at most (one record per <= 4 KiB piece)
#define DC_HDR 32            // bytes of struct dc_rec before the data
#define DC_MAX_PIECES 65536  // pieces one request may have (256 MiB); more are counted as dropped

// dc_rec.flags
#define DC_WRITE 0x1    // data follows (len bytes)
#define DC_DISCARD 0x2  // [offset, +len) was discarded: contents undefined; no data
#define DC_ZEROES 0x4   // [offset, +len) reads as zeroes now; no data
#define DC_FLUSH 0x8    // a cache flush completed; offset/len 0
#define DC_LAST 0x10    // the last record of this completion (request boundary)
#define DC_MARK 0x20    // a marker user space put in the stream (seq: its token); see datacap.ts mark()
#define DC_CRC 0x40     // set by the reader thread, never by the kernel: `crc` holds the data's crc32c

// Which of the bitmaps in the `bits` map: writes per epoch (two, alternating), and ranges dropped.
#define DC_BITS_EPOCH0 0
#define DC_BITS_EPOCH1 1
#define DC_BITS_DROPPED 2

struct dc_rec {
  unsigned long long seq;     // request number, issue order (all records of one request share it)
  unsigned long long offset;  // byte offset in the volume
  unsigned int len;           // bytes (data bytes for DC_WRITE)
  unsigned short flags;
  unsigned short epoch;       // low bits of the epoch the completion was counted in
  unsigned int piece;         // index of this record within the completion
  unsigned int crc;            // 0 from the kernel; the reader thread puts the data's crc32c here (DC_CRC)
};

// Shared with user space through a mmap'able array map of one element.
struct dc_ctl {
  unsigned long long page_offset_base;  // 0 until calibrated: completions are then counted as dropped
  unsigned long long vmemmap_base;
  unsigned long long epoch;             // bumped by user space (see datacap.ts: flip)
  unsigned long long seq;               // requests captured (issue order)
  unsigned long long records;           // records put in the ring
  unsigned long long drops;             // completions (or their tails) not captured whole
  unsigned long long dropped_bytes;
  unsigned long long errors;            // write completions with an error status (counted as dropped)
  unsigned long long calib_sector;      // sector + 1 of a READ whose first page to note; 0: off
  unsigned long long calib_page;        // struct page * of that read's first segment
  unsigned long long scan_found;        // calibration scan: the matching base, 0 if none
  unsigned long long user_drops;        // records the reader could not keep (user-space queue full)
  unsigned long long empty;             // write completions with no bytes in this volume (nothing to capture)
  unsigned long long other_ops;         // completions of operations that change nothing (ignored)
  // Write-group and discard requests with RQF_IO_STAT: issued (minus requeued) plus completed unseen.
  // /sys/block/X/stat counting more completions than these means a request passed both programs
  // unseen (datacap.ts: missed).
  unsigned long long stat_writes;
  unsigned long long stat_discards;
  unsigned long long ends;      // write-group completions the completion program saw
  unsigned long long unseen;    // of those, requests whose issue was not captured (re-read: dropped bitmap)
  unsigned long long requeues;  // requests requeued (issued again later)
  // Empty cache-flush writes (never issued) counted at their start: block_io_start. Last, so pins of a
  // version without it read 0 here (the mmap'ed page past the old value is zeroes).
  unsigned long long flush_starts;
};

#endif
