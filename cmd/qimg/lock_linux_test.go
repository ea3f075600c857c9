package main

import (
	"os"
	"syscall"
)

func blocks(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks }
