package qcow2

import (
	"encoding/binary"
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// countBitmaps counts the clusters of the persistent dirty bitmaps while
// their autoclear bit says they are valid, as qemu-img check does
// (qcow2_check_bitmaps_refcounts): the directory, each bitmap table, and
// each data cluster a table names. A writable open that does not
// maintain them (Q22: Options.NoBitmaps, bitmaps it cannot maintain)
// clears the bit, after which QEMU no longer counts them either. A directory or table that cannot be parsed is a corruption.
func (c *checker) countBitmaps() {
	im := c.im
	if im.hdr.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		return
	}
	var data []byte
	for _, e := range im.hdr.Extensions {
		if e.Type == format.ExtBitmaps {
			data = append([]byte{}, e.Data...) // zero-length: broken, not absent
		}
	}
	if data == nil {
		return
	}
	bad := func(err error) {
		c.msg("ERROR bitmaps: %v", err)
		c.r.Corruptions++
	}
	// A directory or table that cannot be parsed names clusters all the
	// same, which would look leaked: nothing is repaired (QEMU's check
	// fails there, -EINVAL).
	badTable := func(err error) {
		bad(err)
		c.distrust("the bitmaps cannot be parsed")
	}
	ext, err := format.ParseBitmapsExt(data)
	if err != nil {
		badTable(err)
		return
	}
	c.inc(ext.DirOffset, ext.DirSize, "bitmap directory")
	if uint64(ext.DirOffset) > c.fsize || ext.DirSize > c.fsize-uint64(ext.DirOffset) {
		badTable(corruptf("bitmap_directory", uint64(ext.DirOffset), "past the end of the file"))
		return
	}
	dir := make([]byte, ext.DirSize)
	if err := im.readAtLocked(dir, ext.DirOffset); err != nil {
		c.unreadable(err, "the bitmap directory could not be read")
		c.msg("ERROR reading the bitmap directory: %v", err)
		return
	}
	bms, err := format.ParseBitmapDirectory(dir, ext.N)
	if err != nil {
		badTable(err)
		return
	}
	for _, bm := range bms {
		if uint64(bm.TableSize) > maxBitmapTable || uint64(bm.TableSize)*im.g.ClusterSize > maxBitmapPhys {
			// QEMU refuses to open the image (check_dir_entry); its
			// table is not read (up to 1 GiB), nor what it names.
			badTable(corruptf("bitmap_table_size", uint64(bm.TableSize), "bitmap %q: a table of %d entries is past QEMU's bounds", bm.Name, bm.TableSize))
			continue
		}
		if why := unmaintainable(bm, im.hdr.Size, im.g.ClusterSize); why != "" {
			// QEMU refuses to open the image; its clusters are still
			// its own, counted below where they can be read.
			bad(corruptf("bitmaps", uint64(bm.At), "bitmap %q: %s", bm.Name, why))
		}
		n := uint64(bm.TableSize) * format.TableEntrySize
		c.inc(bm.TableOffset, n, "bitmap table")
		if !im.g.Aligned(bm.TableOffset) {
			badTable(corruptf("bitmap_table", uint64(bm.TableOffset), "bitmap %q: table not aligned", bm.Name))
			continue
		}
		// The part of the table past the end of the file reads as
		// zeros, as QEMU reads it (and names no cluster): its reference
		// past the end is the corruption reported (inc).
		tb := make([]byte, n)
		in := uint64(0)
		if uint64(bm.TableOffset) < c.fsize {
			in = min(n, c.fsize-uint64(bm.TableOffset))
		}
		if err := im.readAtLocked(tb[:in], bm.TableOffset); in > 0 && err != nil {
			c.unreadable(err, fmt.Sprintf("the table of bitmap %q could not be read", bm.Name))
			c.msg("ERROR reading the table of bitmap %q: %v", bm.Name, err)
			continue
		}
		for i := uint64(0); i < uint64(bm.TableSize); i++ {
			off, err := format.BitmapDataCluster(binary.BigEndian.Uint64(tb[i*8:]), &im.g)
			if err != nil {
				bad(err)
				continue
			}
			if off != 0 {
				c.inc(off, im.g.ClusterSize, "bitmap data")
			}
		}
	}
}
