package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"
)

var counterMigrations = Migrations{Component: "counter", FS: fstest.MapFS{
	"sqlite/0001_counter.sql": {Data: []byte(`CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counter (id, n) VALUES (1, 0);
CREATE TABLE seen (v INTEGER NOT NULL UNIQUE);`)},
}}

// TestGroupWriterGivesEachCallerItsOwnResult: 200 concurrent writes, one in
// ten failing on purpose (one by a constraint, some by returning an error,
// one by panicking): every success is committed exactly once, every failure
// is undone and reported to its own caller only, each read-check-write sees
// the writes before it, and the writes took fewer transactions than calls.
func TestGroupWriterGivesEachCallerItsOwnResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "g.db"), WithMigrations(counterMigrations))
	before, beforeCalls := s.WriteTransactions(), s.GroupedWrites()
	const n = 200
	errWanted := errors.New("refused on purpose")
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = s.Write(ctx, func(tx *Tx) error {
				// A read-check-write: exact only if no other write interleaves.
				var cur int
				if err := tx.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&cur); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `UPDATE counter SET n = ? WHERE id = 1`, cur+1); err != nil {
					return err
				}
				v := i
				if i%10 == 9 {
					v = 0 // a duplicate of call 0's value: the constraint fails
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO seen (v) VALUES (?)`, v); err != nil {
					return err
				}
				switch {
				case i == 5:
					panic("a write function that panics")
				case i%10 == 7:
					return errWanted
				}
				return nil
			})
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range results {
		switch {
		case i == 5:
			if err == nil {
				t.Errorf("call 5 panicked but got no error")
			}
		case i%10 == 7:
			if !errors.Is(err, errWanted) {
				t.Errorf("call %d: %v, want its own error", i, err)
			}
		case i%10 == 9:
			// Either it ran before call 0 (then call 0 fails) or after.
		case err != nil && i != 0:
			t.Errorf("call %d failed: %v", i, err)
		}
		if err == nil {
			ok++
		}
	}
	if got := countRows(t, s, `SELECT n FROM counter WHERE id = 1`); got != ok {
		t.Fatalf("counter is %d after %d successful writes: a failed write leaked or a read-check-write interleaved", got, ok)
	}
	if got := countRows(t, s, `SELECT COUNT(*) FROM seen`); got != ok {
		t.Fatalf("%d rows for %d successful writes", got, ok)
	}
	txs, calls := s.WriteTransactions()-before, s.GroupedWrites()-beforeCalls
	if calls != n {
		t.Fatalf("the writer carried %d calls, want %d", calls, n)
	}
	t.Logf("%d writes in %d transactions", n, txs)
	if txs >= n {
		t.Errorf("%d concurrent writes took %d transactions: nothing was grouped", n, txs)
	}
}

// TestGroupWriterCancelledCaller: a caller whose context ended before its
// turn is refused without running; a closed store refuses writes.
func TestGroupWriterCancelledCaller(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), WithLogger(quietLog), WithMigrations(counterMigrations))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if err := s.Write(ctx, func(*Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("a cancelled write: err %v, ran %v", err, ran)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	err = s.Write(context.Background(), func(*Tx) error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("a write on a closed store: err %v, ran %v", err, ran)
	}
}

// BenchmarkWriteContended is many goroutines each running a small
// read-check-write through the group writer, beside the same transaction run
// raw on the writer connection one at a time.
func BenchmarkWriteContended(b *testing.B) {
	for _, mode := range []string{"group", "raw"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			s := openAt(b, filepath.Join(b.TempDir(), "b.db"), WithMigrations(counterMigrations))
			var mu sync.Mutex
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					fn := func(tx *Tx) error {
						var cur int
						if err := tx.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&cur); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, `UPDATE counter SET n = ? WHERE id = 1`, cur+1)
						return err
					}
					var err error
					if mode == "group" {
						err = s.Write(ctx, fn)
					} else {
						mu.Lock()
						err = s.write(ctx, nil, nil, fn)
						mu.Unlock()
					}
					if err != nil {
						b.Error(fmt.Errorf("write: %w", err))
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

// TestGenerationSkipsRecordWrites: a committed Write moves the generation
// before its caller is answered; a WriteRecords commit does not. (The
// change watch is not started here: Generation is read without it.)
func TestGenerationSkipsRecordWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "g.db"), WithMigrations(counterMigrations))
	exec := func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE counter SET n = n + 1 WHERE id = 1`)
		return err
	}
	g0 := s.gen.Load()
	if err := s.WriteRecords(ctx, exec); err != nil {
		t.Fatal(err)
	}
	if g := s.gen.Load(); g != g0 {
		t.Fatalf("a records-only write moved the generation %d -> %d", g0, g)
	}
	if err := s.Write(ctx, exec); err != nil {
		t.Fatal(err)
	}
	if g := s.gen.Load(); g == g0 {
		t.Fatal("a committed write left the generation where it was")
	}
}
