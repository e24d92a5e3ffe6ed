//go:build unix

package store

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// fileID is a file's identity: the device and inode it lives on. A path that
// names another file than before (replaced, or removed and created again)
// has another identity.
type fileID struct{ dev, ino uint64 }

// statID returns the identity of the file at path (following symlinks), or
// ok == false when there is none.
func statID(path string) (id fileID, ok bool, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileID{}, false, nil
	}
	if err != nil {
		return fileID{}, false, err
	}
	return idOf(fi), true, nil
}

func idOf(fi os.FileInfo) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino} //nolint:unconvert // Dev is int32 on some platforms
}

// linkCount is the number of hard links of the file at path (1 for a file
// with one name; 0 when it cannot be examined).
func linkCount(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink) //nolint:unconvert // Nlink is uint16 or uint32 on some platforms
	}
	return 0
}
