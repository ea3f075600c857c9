//go:build !unix

package deflate4k

func cpuSeconds() float64 { return 0 }
