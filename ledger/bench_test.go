package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// authorizedOps prepares n operations in state authorized, outside the timer.
func authorizedOps(b *testing.B, db *DB, n int, agents int) []string {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = authorizedOp(b, db, fmt.Sprintf("bench-%d", i%agents), "bench").ID
	}
	return ids
}

func benchDB(b *testing.B) *DB {
	db := openTest(b, WithAutoFreeze(0, 0))
	ctx := context.Background()
	for _, s := range []Scope{TeamScope("bench"), GlobalScope} {
		for _, w := range []Window{WindowDay, WindowMonth, WindowTotal} {
			if err := db.SetBudget(ctx, Budget{Scope: s, Window: w, Limit: usd("9000000000")}, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := db.SetLimit(ctx, VelocityLimit{Scope: GlobalScope, Action: "register_domain", Window: WindowDay, Max: 1 << 30}, "bench"); err != nil {
		b.Fatal(err)
	}
	return db
}

// reserveSettle is the measured unit: reserve the quote, move to executing, settle.
func reserveSettle(ctx context.Context, db *DB, id string) error {
	if _, err := db.Reserve(ctx, ReserveRequest{OperationID: id, Action: "register_domain", Amount: usd("8.57")}); err != nil {
		return err
	}
	if _, err := db.Transition(ctx, id, StateExecuting, TransitionOpts{From: []State{StateReserved}}); err != nil {
		return err
	}
	_, err := db.Settle(ctx, id, SettleRequest{Actual: usd("8.57")})
	return err
}

// BenchmarkReserveSettle: one goroutine; each op is reserve + executing + settle
// (three BEGIN IMMEDIATE transactions) against 6 budgets and a velocity limit.
func BenchmarkReserveSettle(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b)
	ids := authorizedOps(b, db, b.N, 10)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := reserveSettle(ctx, db, ids[i]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

// BenchmarkReserveSettleParallel: the same unit from GOMAXPROCS goroutines (x4),
// all contending for the single writer.
func BenchmarkReserveSettleParallel(b *testing.B) {
	ctx := context.Background()
	db := benchDB(b)
	ids := authorizedOps(b, db, b.N, 10)
	var next atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := reserveSettle(ctx, db, ids[next.Add(1)-1]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkReserveSettleHistory measures the same unit with 1k and 1M rows already
// in operations, charges and audit_events (seeded with one INSERT … SELECT from a
// recursive CTE each). The cost must not grow with history.
func BenchmarkReserveSettleHistory(b *testing.B) {
	// The testing package runs a sub-benchmark's function several times (b.N = 1,
	// then larger) and cleans up after each run, so the seeded database belongs
	// to the parent and is seeded once.
	parent := b
	seeded := map[int]*DB{}
	for _, rows := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			if rows > 1_000 && testing.Short() {
				b.Skip("1M-row seed skipped in -short")
			}
			ctx := context.Background()
			db := seeded[rows]
			if db == nil {
				db = benchDB(parent)
				seedHistory(b, db, rows)
				seeded[rows] = db
			}
			ids := authorizedOps(b, db, b.N, 10)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if err := reserveSettle(ctx, db, ids[i]); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}

// seedHistory inserts n settled operations, n charges and n audit events spread
// over the past. The seeded audit rows are not a valid chain (the benchmark never
// verifies it); appending only reads the head.
func seedHistory(b *testing.B, db *DB, n int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	now := time.Now().UnixNano()
	stmts := []string{
		`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
		 INSERT INTO operations (id, agent, team, tool, resource, args, args_hash, reason, idempotency_key, key_derived,
		   client_name, client_version, client_session, client_transport, state, currency, quote_micros, charged_micros, created_at, updated_at)
		 SELECT printf('op_seed%019d', i), 'bench-' || (i % 10), 'bench', 'register_domain', 'domain:seed' || i || '.dev', '{}',
		   lower(hex(randomblob(32))), 'seed', 'seed-' || i, 0, '', '', '', '', 'succeeded', 'USD', 8570000, 8570000,
		   ?2 - i * 1000000000, ?2 - i * 1000000000 FROM s`,
		`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
		 INSERT INTO charges (operation_id, scope, win, period, currency, action, amount_micros, at)
		 SELECT printf('op_seed%019d', i), 'team:bench', 'month', '2020-' || printf('%02d', 1 + i % 12), 'USD', 'register_domain', 8570000, ?2 - i FROM s`,
		`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?1)
		 INSERT INTO audit_events (seq, at, type, actor, operation_id, data, prev_hash, hash)
		 SELECT i + (SELECT COALESCE(MAX(seq), 0) FROM audit_events), ?2 - i, 'seed.event', 'system', printf('op_seed%019d', i),
		   '{"seed":true}', lower(hex(randomblob(32))), lower(hex(randomblob(32))) FROM s`,
	}
	for _, q := range stmts {
		if _, err := db.st.ExecContext(ctx, q, n, now); err != nil {
			b.Fatalf("seed: %v", err)
		}
	}
	b.Logf("seeded %d rows in each of operations, charges, audit_events in %s", n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkAuditAppend: one event per BEGIN IMMEDIATE transaction, and ten per
// transaction (the shape of a pipeline step), with the chain link computed each time.
// BenchmarkAuditAppend appends events in one transaction each: with the audit
// key (what tollgate runs), without it (a legacy chain), and "raw", the same
// rows inserted into a plain table in the same kind of transaction, for the
// ratio of what the chain itself costs.
func BenchmarkAuditAppend(b *testing.B) {
	events := func(n int) []Event {
		out := make([]Event, n)
		for i := range out {
			out[i] = NewEvent("cloudflare.request", "system", "op_aaaaaaaaaaaaaaaaaaaaaaaaaa", map[string]any{
				"method": "POST", "path": "/accounts/x/registrar/registrations", "status": 201, "cf_ray": "8f00aa",
			})
		}
		return out
	}
	for _, batch := range []int{1, 10} {
		for _, mode := range []string{"raw", "keyless", "keyed"} {
			b.Run(fmt.Sprintf("%s/batch=%d", mode, batch), func(b *testing.B) {
				ctx := context.Background()
				db := openBench(b, mode)
				evs := events(batch)
				appendOnce := func() error { return db.Append(ctx, evs...) }
				if mode == "raw" {
					if _, err := db.Store().ExecContext(ctx, `CREATE TABLE bench_raw (seq INTEGER PRIMARY KEY, at INTEGER, type TEXT, actor TEXT,
						operation_id TEXT, data TEXT, prev_hash TEXT, hash TEXT, mac TEXT)`); err != nil {
						b.Fatal(err)
					}
					appendOnce = func() error {
						return db.Store().Write(ctx, func(tx *store.Tx) error {
							for _, e := range evs {
								if _, err := tx.ExecContext(ctx, `INSERT INTO bench_raw (at, type, actor, operation_id, data, prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
									time.Now().UnixNano(), e.Type, e.Actor, e.OperationID, string(e.Data), genesisHash, genesisHash, ""); err != nil {
									return err
								}
							}
							return nil
						})
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := appendOnce(); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// openBench opens a keyed ledger, or an unkeyed one for mode "keyless".
func openBench(b *testing.B, mode string) *DB {
	if mode == "keyless" {
		return openTest(b, withoutKey())
	}
	return openTest(b)
}

// BenchmarkAuditLink is the CPU part of appending one event, without the
// disk: the plain link hash, and the hash plus the key's MAC.
func BenchmarkAuditLink(b *testing.B) {
	data := []byte(`{"cf_ray":"8f00aa","method":"POST","path":"/accounts/x/registrar/registrations","status":201}`)
	at := time.Now().UTC()
	for _, keyed := range []bool{false, true} {
		b.Run(map[bool]string{false: "hash", true: "hash+mac"}[keyed], func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				h := chainHash(genesisHash, int64(i), at, "cloudflare.request", "system", "op_aaaaaaaaaaaaaaaaaaaaaaaaaa", data)
				if keyed {
					_ = testKey.eventMAC(h)
				}
			}
		})
	}
}

// BenchmarkAuditVerify recomputes a 2,000-event chain: plain hashes only, and
// with every MAC checked.
func BenchmarkAuditVerify(b *testing.B) {
	for _, mode := range []string{"keyless", "keyed"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			db := openBench(b, mode)
			const n = 2000
			for i := 0; i < n; i += 100 {
				evs := make([]Event, 100)
				for j := range evs {
					evs[j] = NewEvent("test.bench", "system", "", map[string]any{"i": i + j})
				}
				if err := db.Append(ctx, evs...); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if rep, err := db.Verify(ctx); err != nil || !rep.OK {
					b.Fatal(rep, err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// reportLatency adds p50 and p99 of the per-operation latencies.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkReserveContended: 16 goroutines each reserving its own
// authorized operation (ledger.Reserve: 6 budgets, a velocity limit, 9 holds,
// running totals, the audit link), beside a raw reserve-like transaction in
// the same run: BEGIN IMMEDIATE on one connection, read the budgets and
// totals, insert the holds, bump the totals, update the operation, append one
// audit row, COMMIT, with the same 16 goroutines queued on that connection.
// The ratio of reserves/s is the ledger's own cost over SQLite's.
func BenchmarkReserveContended(b *testing.B) {
	ctx := context.Background()
	b.Run("ledger", func(b *testing.B) {
		db := benchDB(b)
		ids := authorizedOps(b, db, b.N, 10)
		var next atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := ids[next.Add(1)-1]
				if _, err := db.Reserve(ctx, ReserveRequest{OperationID: id, Action: "register_domain", Amount: usd("8.57")}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reserves/s")
	})
	b.Run("raw_sqlite", func(b *testing.B) {
		st, err := store.Open(ctx, b.TempDir()+"/raw.db", store.WithLogger(quietLog), store.WithMigrations(store.Migrations{Component: "raw", FS: rawReserveSchema}))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = st.Close() })
		w := st.Backend().Writer()
		var next atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := rawReserve(ctx, w, next.Add(1)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reserves/s")
	})
}

var rawReserveSchema = fstest.MapFS{"sqlite/0001_raw.sql": {Data: []byte(`
CREATE TABLE budgets (scope TEXT, win TEXT, limit_micros INTEGER, PRIMARY KEY (scope, win));
INSERT INTO budgets VALUES ('team:bench','day',9e15),('team:bench','month',9e15),('team:bench','total',9e15),('global','day',9e15),('global','month',9e15),('global','total',9e15);
CREATE TABLE totals (scope TEXT, win TEXT, held INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (scope, win));
CREATE TABLE holds (op INTEGER, scope TEXT, win TEXT, amount INTEGER);
CREATE TABLE ops (id INTEGER PRIMARY KEY, state TEXT);
CREATE TABLE audit (seq INTEGER PRIMARY KEY, prev TEXT, hash TEXT, data TEXT);`)}}

// rawReserve is the reserve-like transaction BenchmarkReserveContended
// compares the ledger with.
func rawReserve(ctx context.Context, w *sql.DB, op int64) error {
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT b.scope, b.win, b.limit_micros, COALESCE(t.held, 0) FROM budgets b LEFT JOIN totals t USING (scope, win)`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var scope, win string
		var limit, held int64
		if err := rows.Scan(&scope, &win, &limit, &held); err != nil {
			rows.Close()
			return err
		}
	}
	rows.Close()
	if _, err := tx.ExecContext(ctx, `INSERT INTO ops (id, state) VALUES (?, 'reserved')`, op); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO holds SELECT ?, scope, win, 8570000 FROM budgets`, op); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO totals (scope, win, held) SELECT scope, win, amount FROM holds WHERE op = ?
		ON CONFLICT (scope, win) DO UPDATE SET held = held + excluded.held`, op); err != nil {
		return err
	}
	var prev string
	_ = tx.QueryRowContext(ctx, `SELECT hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&prev)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit (prev, hash, data) VALUES (?, ?, '{"amount":"8.57"}')`, prev, chainHash(prev, op, time.Now(), "budget.reserved", "agent:bench", "", []byte(`{}`))); err != nil {
		return err
	}
	return tx.Commit()
}
