package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/qring/qring/crypto/luks"
)

// luksInfo is QEMU's QCryptoBlockInfoLUKS: qemu-img info's "encrypt"
// block of a LUKS-encrypted qcow2 image (read without the key).
type luksInfo struct {
	IVGenAlg       string         `json:"ivgen-alg"`
	HashAlg        string         `json:"hash-alg"`
	CipherAlg      string         `json:"cipher-alg"`
	UUID           string         `json:"uuid"`
	IVGenHashAlg   string         `json:"ivgen-hash-alg,omitempty"`
	Format         string         `json:"format,omitempty"` // qcow2's encrypt block only
	CipherMode     string         `json:"cipher-mode"`
	Slots          []luksSlotInfo `json:"slots"`
	PayloadOffset  int64          `json:"payload-offset"`
	MasterKeyIters uint32         `json:"master-key-iters"`
}

type luksSlotInfo struct {
	Active    bool    `json:"active"`
	Iters     *uint32 `json:"iters,omitempty"`
	KeyOffset int64   `json:"key-offset"`
	Stripes   *uint32 `json:"stripes,omitempty"`
}

func newLUKSInfo(h *luks.Header) *luksInfo {
	mode, ivgen, _ := strings.Cut(h.CipherMode, "-")
	// "plain64:sha256": QEMU shows the IV hash only for essiv.
	ivgen, ivhash, _ := strings.Cut(ivgen, ":")
	if ivgen != "essiv" {
		ivhash = ""
	}
	bits := h.KeyBytes * 8
	if mode == "xts" {
		bits /= 2 // two keys
	}
	inf := &luksInfo{IVGenAlg: ivgen, HashAlg: h.HashSpec, CipherAlg: fmt.Sprintf("%s-%d", h.CipherName, bits),
		UUID: h.UUID, IVGenHashAlg: ivhash, Format: "luks", CipherMode: mode, PayloadOffset: int64(h.PayloadBytes()),
		MasterKeyIters: h.MKDigestIterations}
	for i := range h.Slots {
		s := &h.Slots[i]
		si := luksSlotInfo{Active: s.Enabled(), KeyOffset: int64(s.KeyMaterialOffset) * luks.SectorSize}
		if si.Active {
			it, st := s.Iterations, s.Stripes
			si.Iters, si.Stripes = &it, &st
		}
		inf.Slots = append(inf.Slots, si)
	}
	return inf
}

// encryptInfo is qemu-img info's "encrypt" block of a qcow2 image.
type encryptInfo interface {
	writeFields(w io.Writer, indent string)
}

func (e *luksInfo) writeFields(w io.Writer, indent string) { writeLUKSFields(w, e, indent) }

// aesInfo is the block of QEMU's legacy AES method: its name only.
type aesInfo struct {
	Format string `json:"format"`
}

func (e *aesInfo) writeFields(w io.Writer, indent string) {
	fmt.Fprintf(w, "%sformat: %s\n", indent, e.Format)
}

// writeLUKSFields prints the fields of e at indent in: qcow2's encrypt
// block, and a luks image's format specific information.
func writeLUKSFields(w io.Writer, e *luksInfo, in string) {
	fmt.Fprintf(w, "%sivgen alg: %s\n%shash alg: %s\n%scipher alg: %s\n%suuid: %s\n",
		in, e.IVGenAlg, in, e.HashAlg, in, e.CipherAlg, in, e.UUID)
	if e.IVGenHashAlg != "" {
		fmt.Fprintf(w, "%sivgen hash alg: %s\n", in, e.IVGenHashAlg)
	}
	if e.Format != "" {
		fmt.Fprintf(w, "%sformat: %s\n", in, e.Format)
	}
	fmt.Fprintf(w, "%scipher mode: %s\n%sslots:\n", in, e.CipherMode, in)
	for i, s := range e.Slots {
		fmt.Fprintf(w, "%s    [%d]:\n", in, i)
		sin := in + "        "
		fmt.Fprintf(w, "%sactive: %t\n", sin, s.Active)
		if s.Iters != nil {
			fmt.Fprintf(w, "%siters: %d\n", sin, *s.Iters)
		}
		fmt.Fprintf(w, "%skey offset: %d\n", sin, s.KeyOffset)
		if s.Stripes != nil {
			fmt.Fprintf(w, "%sstripes: %d\n", sin, *s.Stripes)
		}
	}
	fmt.Fprintf(w, "%spayload offset: %d\n%smaster key iters: %d\n", in, e.PayloadOffset, in, e.MasterKeyIters)
}
