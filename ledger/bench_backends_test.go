package ledger

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgatehq/tollgate/ledger/store/storetest"
)

// BenchmarkReservations measures reservations/s — Reserve alone, one
// serialised write transaction against 6 budgets and a velocity limit — with
// 1, 4 and 16 goroutines sharing one handle, on each backend.
func BenchmarkReservations(b *testing.B) {
	for _, be := range storetest.Backends() {
		for _, g := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("%s/goroutines=%d", be.Name, g), func(b *testing.B) {
				db := benchDB(b)
				ids := authorizedOps(b, db, b.N, 10)
				ctx := context.Background()
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range g {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1) - 1
							if i >= int64(len(ids)) {
								return
							}
							if _, err := db.Reserve(ctx, ReserveRequest{OperationID: ids[i], Action: "register_domain", Amount: usd("8.57")}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reservations/s")
			})
		}
	}
}

// workerEnv tells a child test process to be a reservation worker on the
// database it names (see TestReservationWorker).
const workerEnv = "TOLLGATE_BENCH_RESERVE_DB"

// BenchmarkReservationsProcesses measures reservations/s with several
// processes on one database, each with its own handle: 4 on one SQLite file
// (as 4 stdio servers), whose writers serialise on BEGIN IMMEDIATE and
// busy_timeout, and 2 on one PostgreSQL database (as 2 replicas), which
// serialise on the advisory lock. Process start and open are outside the
// timer.
func BenchmarkReservationsProcesses(b *testing.B) {
	b.Run("sqlite/processes=4", func(b *testing.B) {
		benchReservationProcesses(b, filepath.Join(b.TempDir(), "tollgate.db"), 4)
	})
	b.Run("postgres/processes=2", func(b *testing.B) {
		benchReservationProcesses(b, storetest.PostgresDSN(b), 2)
	})
}

func benchReservationProcesses(b *testing.B, path string, procs int) {
	db := openAt(b, path, WithAutoFreeze(0, 0), withoutKey())
	ctx := context.Background()
	for _, s := range []Scope{TeamScope("bench"), GlobalScope} {
		for _, w := range []Window{WindowDay, WindowMonth, WindowTotal} {
			if err := db.SetBudget(ctx, Budget{Scope: s, Window: w, Limit: usd("9000000000")}, "bench"); err != nil {
				b.Fatal(err)
			}
		}
	}
	ids := authorizedOps(b, db, b.N, 10)
	type child struct {
		cmd *exec.Cmd
		in  *os.File
		out *bufio.Scanner
	}
	children := make([]child, procs)
	for p := range children {
		var mine []string
		for i := p; i < len(ids); i += procs {
			mine = append(mine, ids[i])
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestReservationWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), workerEnv+"="+path, "TOLLGATE_BENCH_RESERVE_IDS="+strings.Join(mine, ","))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !waitLine(sc, "ready") {
			b.Fatal("a worker did not start")
		}
		children[p] = child{cmd: cmd, in: stdin.(*os.File), out: sc}
	}
	b.ResetTimer()
	for _, c := range children {
		_, _ = c.in.WriteString("go\n")
	}
	for _, c := range children {
		if !waitLine(c.out, "done") {
			b.Error("a worker failed")
		}
	}
	b.StopTimer()
	for _, c := range children {
		_ = c.in.Close()
		_ = c.cmd.Wait()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reservations/s")
	if n := countRows(b, db, `SELECT COUNT(*) FROM operations WHERE state = 'reserved'`); n != b.N {
		b.Fatalf("%d reserved, want %d", n, b.N)
	}
}

func waitLine(sc *bufio.Scanner, want string) bool {
	for sc.Scan() {
		if sc.Text() == want {
			return true
		}
	}
	return false
}

// TestReservationWorker is the child process of
// BenchmarkReservationsProcesses; it does nothing in a normal test run.
func TestReservationWorker(t *testing.T) {
	path := os.Getenv(workerEnv)
	if path == "" {
		t.Skip("a helper process of BenchmarkReservationsProcesses")
	}
	db := openAt(t, path, WithAutoFreeze(0, 0), withoutKey())
	ids := strings.Split(os.Getenv("TOLLGATE_BENCH_RESERVE_IDS"), ",")
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if !waitLine(in, "go") {
		t.Fatal("no start signal")
	}
	ctx := context.Background()
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, err := db.Reserve(ctx, ReserveRequest{OperationID: id, Action: "register_domain", Amount: usd("8.57")}); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("done")
}
