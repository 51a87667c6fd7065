"""Block stores: content-addressed storage of blocks, keyed by multihash (as Kubo does).

    BlockStore (Protocol)      put / get / has / delete / iter_cids
    PinningBlockStore          + pin / unpin / pins / gc
    FilesystemBlockstore       the embedded default (on-disk, sharded, atomic, verified)
    MemoryBlockstore           for tests and short-lived staging

Blocks are identified by their multihash: a raw and a dag-pb CID with the same digest name
the same bytes, and `iter_cids()` yields CIDv1 **raw** CIDs (what Kubo's `refs local`
returns), because the store does not remember which codec a block was put under.

Every `get` verifies the bytes against the CID (BlockMismatchError); `put` refuses a block
that does not hash to its CID. Pins are recursive: pinning a root walks its dag-pb links,
requires every block to be present, and protects the whole DAG from `gc`. An import holds
`with store.importing():` from its first put to its pin, and `gc` waits until no import
does (and new imports wait for a running gc), as Kubo's GC lock does: in this process, and
for a FilesystemBlockstore in every process on the same store (flock(2) on
`<root>/gc.lock`). Vault.seal and the CLI's add and CAR import do; a caller that puts
blocks without it must not run gc meanwhile.

On-disk layout of FilesystemBlockstore (compatible in spirit with go-ds-flatfs
"next-to-last/2"):

    <root>/blocks/<SS>/<KEY>.data     KEY = base32 upper-case, unpadded, of the multihash
                                      ("CIQ…"); SS = KEY[-3:-1]
    <root>/blocks/SHARDING            "/repo/flatfs/shard/v1/next-to-last/2" (as flatfs)
    <root>/gc.lock                    empty; imports flock it shared, gc exclusive
    <root>/pins/<KEY>.pin             one file per pin, KEY = base32 upper-case, unpadded,
                                      of the CID's binary form; it holds the CID string
                                      (a pins.json of earlier versions is moved into pins/)

A durable store (sync=True) makes all 1024 shard directories when it is first opened.

Durability: a block is written to a temp file in its shard directory and renamed into
place, so a reader never sees a partial block. With `sync=True` (default) each put fsyncs
the file before the rename and the directory after it. Inside `with store.batch():` the
fsyncs are deferred: by default to the end of the batch (one pass over the written files,
then each shard directory once); with `batch(background=True)` two threads fsync each
block file, then its shard directory, as soon as the file is renamed into place, while the
caller goes on writing, and the end of the batch waits for them. Either way, when
the outermost batch exits, every block put inside it (bytes and directory entry) is
durable, and a failed fsync is raised there. A shard directory is made on its first
block, and then the blocks directory is fsynced too (inside a batch: once, at its end), so
that the shard's entry is as durable as the block (go-ds-flatfs does the same).
`sync_method` picks how a batch is made durable: "fsync" as above; "syncfs" writes every
block and its directory entry without syncing them and ends the batch with one syncfs(2)
of the store's filesystem (one device flush and the metadata written together, instead of
two flushes and two metadata writes per block: 5-15% of a seal on these VMs); "auto"
(default) takes syncfs when the machine has under 64 MiB waiting to be written (Dirty +
Writeback in /proc/meminfo) at the start of the batch and still at its end, else fsyncs
the batch's own files and shards at its end. syncfs also makes whatever else is dirty on that
filesystem durable: that is why "auto" looks first, and a store on a busy shared
filesystem can pin "fsync". Single puts outside a batch always fsync.
A batch belongs to the context that entered it (a contextvars.ContextVar of the store):
the puts of that thread, and of the worker threads it starts with a copy of its context
(vault/_pipeline._Sink, vault/car's put threads), join it; a put from any other thread,
or another thread's batch, has its own durability, so that one seal never returns before
its blocks are durable because another seal's batch was still open.
`batch(direct=True)` writes large blocks past the page cache (O_DIRECT; where the
accelerator is built, bytes that are not page-aligned are first copied into an aligned
buffer, which costs far less than new page-cache pages). With the native
accelerator (vault/_accel: tl_write_block) a put is one call that creates, writes, fsyncs,
renames and fsyncs the shard directory without the GIL; inside `batch(background=True)`
it then fsyncs inline (the caller's threads are the background: seal runs six writers)
instead of handing the file to the fsync threads. The files, their order of operations
and the guarantees are the same; tests/vault/test_blockstore_native.py traces them. A crash inside an
unfinished batch can leave torn blocks, which are detected on read (hash check) and
replaced by the next put of the same block: put reads a block file that is already
there with the right size and keeps it only if it hashes to its CID (`holds`), so a
re-import repairs what a crash or bit rot damaged. A block whose fsync (or its
directory's, or its batch's syncfs) failed is written again at once as a new file (or,
if that fails too, by this store object's next put of it; see _flusher.Suspects). With `sync=False` nothing is fsynced (tests, scratch
stores). A pin file is always written with temp + fsync + rename + directory fsync.

`get(cid, verify=False)` skips the hash check for a caller that verifies the block itself
(unixfs.export does); every other read is verified here. `get(cid, direct=True)` reads a
large block past the page cache, unless all of it is there already (cachestat(2)).
"""
from __future__ import annotations

from vault.blockstore._flusher import SYNC_METHODS
from vault.blockstore._pinning import BlockStore, PinningBlockStore, walk_dag
from vault.blockstore.filesystem import FilesystemBlockstore
from vault.blockstore.memory import MemoryBlockstore

__all__ = ["SYNC_METHODS", "BlockStore", "FilesystemBlockstore", "MemoryBlockstore", "PinningBlockStore", "walk_dag"]
