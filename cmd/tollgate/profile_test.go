package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCPUProfile: the hook writes a profile pprof can read (gzip-compressed
// protobuf), and load refuses --cpuprofile without --spawn.
func TestCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	stop := startCPUProfile(path)
	stop()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Fatalf("the profile is not gzip-compressed pprof data: % x", b[:min(len(b), 8)])
	}
	startCPUProfile("")() // none asked: nothing to stop

	heap := filepath.Join(t.TempDir(), "heap.pprof")
	writeHeapProfile(heap)
	if b, err := os.ReadFile(heap); err != nil || !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Fatalf("the heap profile is not gzip-compressed pprof data: %v", err)
	}
	if err := runLoad(context.Background(), []string{"--memprofile", heap}, &bytes.Buffer{}); !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "--memprofile needs --spawn") {
		t.Fatalf("load --memprofile without --spawn: %v, want a usage error naming --spawn", err)
	}

	err = runLoad(context.Background(), []string{"--cpuprofile", path}, &bytes.Buffer{})
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--cpuprofile needs --spawn") {
		t.Fatalf("load --cpuprofile without --spawn: %v, want a usage error naming --spawn", err)
	}
}
