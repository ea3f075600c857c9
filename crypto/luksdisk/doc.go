// Package luksdisk is QEMU's "luks" image format: a LUKS1 header and
// its key material at the start of a file, then the payload, every
// 512-byte sector of it encrypted under the volume's master key
// (crypto/luks does the header and the cipher; this package is the
// disk over a block.Device).
//
// Invariants (cited as LV<n>):
//
//	LV1  Guest offset o is file offset PayloadBytes()+o, and its sector's
//	     IV is o/512: the payload sector, not the file's (QEMU's
//	     block_crypto_co_preadv passes the guest offset to
//	     qcrypto_block_decrypt). The guest size is the file's size less
//	     the payload offset.
//	LV2  The file holds ciphertext only: every write encrypts a copy of
//	     the caller's buffers (they are never changed) and writes whole
//	     sectors. A write that covers part of a sector reads, decrypts,
//	     merges and re-encrypts that sector; writes whose sectors overlap
//	     run one at a time (a range lock over sectors), so two partial
//	     writes to one sector never lose each other's bytes.
//	LV3  Zeroes are written as encrypted zero sectors, as QEMU's generic
//	     fallback does (its crypto driver has no write_zeroes): a
//	     request for an efficient zero (Allocate, NoFallback) is
//	     ErrNotSupported. Discard is accepted and does nothing, as
//	     QEMU's crypto driver (it has no pdiscard).
//	LV4  Opened without the key (Options.NoKey: metadata only, QEMU's
//	     BDRV_O_NO_IO) the header and size are known and every read or
//	     write fails with ErrNoKey.
//	LV5  The header area is never written after Create; a read-only disk
//	     writes nothing at all.
//	LV6  Truncate and writes past the end keep the block.Device
//	     contract: grown space reads as zeros (written as encrypted
//	     zeros; growing writes run one at a time, so that one's zeros
//	     never land on another's bytes; a size inside a sector keeps the
//	     sector whole, its tail zero). ResizeFile is QEMU's resize:
//	     the file alone, its grown zeros read as noise, as a new volume's
//	     payload does.
//	LV7  Amend changes key slots only, never the master key or the
//	     payload: a new slot's material is durable before the header that
//	     enables it; an erased slot is disabled in a durable header before
//	     its material is overwritten. A crash leaves the old passphrases
//	     or the new ones working, and the data readable by either.
package luksdisk
