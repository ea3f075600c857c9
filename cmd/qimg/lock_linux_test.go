package main

import (
	"os"
	"strconv"
	"syscall"
)

func itoa(sys any) string {
	st := sys.(*syscall.Stat_t)
	return strconv.FormatUint(st.Ino, 10)
}

func blocks(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks }
