// Package deflate4k is a small, allocation-light raw DEFLATE (RFC 1951)
// encoder for qcow2 compressed clusters.
//
// QEMU decodes zlib-type qcow2 clusters with inflateInit2(windowBits -12),
// i.e. a raw deflate stream whose back-references reach at most 4096 bytes
// back. Compress produces streams for exactly that decoder, with a
// compression strategy modelled on zlib's deflate_slow at level 6 (hash
// chains with max_chain 128, lazy matching with max_lazy 16, good_length 8,
// nice_length 128) followed by per-block choice of dynamic Huffman, fixed
// Huffman or stored encoding, whichever is smallest.
//
// Invariants of every stream produced by Compress:
//
//   - it is one complete raw deflate stream per RFC 1951 (no zlib or gzip
//     header or trailer); its last block has BFINAL set and nothing follows
//     it except the zero padding bits of the final byte;
//   - every match distance is in 1..4096 and every match length in 3..258
//     (length 258 is always sent as code 285);
//   - dynamic Huffman codes are at most 15 bits long, code-length codes at
//     most 7 bits; every tree has at least two codes, as zlib emits them;
//   - the output is decodable by zlib's inflate with windowBits -12 (and
//     any larger window) and by Go's compress/flate reader.
//
// Compress is safe for concurrent use; per-call state (about 300 KiB of
// hash chains and token buffers) is recycled through a sync.Pool, so the
// steady state allocates nothing beyond growth of dst.
package deflate4k
