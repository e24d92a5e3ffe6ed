//go:build !unix

package sandbox

import "os"

// fileStamp identifies one version of the state file by size and mtime
// (no inode where flock is unavailable).
type fileStamp struct {
	size  int64
	mtime int64
}

func stampOf(fi os.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return stampOf(fi), nil
}

func statOpen(f *os.File) (fileStamp, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileStamp{}, err
	}
	return stampOf(fi), nil
}

// flock is a no-op where flock is unavailable: share a state file between
// processes only on unix.
func flock(*os.File) error   { return nil }
func funlock(*os.File) error { return nil }
