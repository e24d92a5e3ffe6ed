package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/tools"
)

// HTTP limits (issue 9 item 4): one agent, or anyone who can connect, must
// not take the server's memory or connections. Assertions are on sizes and
// counts; times are only hang guards.

// hlHeap samples the process's heap (objects, live and not yet collected)
// until stop, and returns the largest value seen above the starting one.
func hlHeap() (stop func() uint64) {
	runtime.GC()
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		rtmetrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	base := read()
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v := read(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		if p := peak.Load(); p > base {
			return p - base
		}
		return 0
	}
}

// hlGenerator yields n bytes of a JSON-ish body without ever holding them,
// counting how many were taken.
type hlGenerator struct {
	left  int64
	taken atomic.Int64
}

func (g *hlGenerator) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	n := int64(len(p))
	if n > g.left {
		n = g.left
	}
	for i := range p[:n] {
		p[i] = 'a'
	}
	g.left -= n
	g.taken.Add(n)
	return int(n), nil
}

// TestHTTPBodyOf400MiBKeepsMemoryFlat is issue 9's attack: one
// authenticated 400 MiB body took the server to about 3 GB. Now it gets a
// 413 naming the limit and how to raise it, whether it declares its length
// (refused before reading) or streams it chunked (refused at the cap), and
// the process's heap grows by far less than the body.
func TestHTTPBodyOf400MiBKeepsMemoryFlat(t *testing.T) {
	e := newEnv(t, withQuietLogs())
	base := trServeHTTP(t, e)
	const size = 400 << 20
	for _, declared := range []bool{true, false} {
		name := map[bool]string{true: "Content-Length", false: "chunked"}[declared]
		t.Run(name, func(t *testing.T) {
			gen := &hlGenerator{left: size}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/mcp", gen)
			if err != nil {
				t.Fatal(err)
			}
			if declared {
				req.ContentLength = size
			} else {
				req.ContentLength = -1
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			growth := hlHeap()
			resp, err := http.DefaultClient.Do(req)
			grew := growth()
			t.Logf("%s: heap grew by at most %.1f MiB; the client had sent %.1f MiB of 400 when refused", name, float64(grew)/(1<<20), float64(gen.taken.Load())/(1<<20))
			if grew > 64<<20 {
				t.Errorf("the heap grew by %d MiB under a 400 MiB body, want < 64 MiB", grew>>20)
			}
			if gen.taken.Load() >= size {
				t.Errorf("the whole 400 MiB body was read")
			}
			if err != nil {
				// The server may close the connection while the client still
				// writes; then the client sees that instead of the 413.
				t.Logf("client: %v", err)
				return
			}
			defer resp.Body.Close()
			var body struct{ Error, ErrorDescription string }
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = json.Unmarshal(b, &struct {
				Error *string `json:"error"`
				Desc  *string `json:"error_description"`
			}{&body.Error, &body.ErrorDescription})
			if resp.StatusCode != http.StatusRequestEntityTooLarge || body.Error != "body_too_large" ||
				!strings.Contains(body.ErrorDescription, fmt.Sprint(DefaultMaxBodyBytes)) || !strings.Contains(body.ErrorDescription, "--max-body-bytes") {
				t.Fatalf("%s %s, want 413 body_too_large naming %d bytes and --max-body-bytes", resp.Status, b, DefaultMaxBodyBytes)
			}
		})
	}
}

// TestHTTPBodyCapFitsTheLargestWorker: the default cap admits a call
// carrying a module of tools.MaxModuleBytes whose every character JSON
// escapes (two bytes each), and the cap is configurable.
func TestHTTPBodyCapFitsTheLargestWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := trServeHTTP(t, e)
	r := trPost(t, base+"/mcp", "", "", trInitBody)
	_ = r.Body.Close()
	sid := r.Header.Get("Mcp-Session-Id")
	pad := strings.Repeat(`\"`, tools.MaxModuleBytes)
	big := `{"jsonrpc":"2.0","id":7,"method":"ping","params":{"_meta":{"pad":"` + pad + `"}}}`
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", "", sid, big); code != http.StatusOK {
		t.Fatalf("a %d-byte body (a fully escaped %d-byte module): %d %.200s", len(big), tools.MaxModuleBytes, code, body)
	}

	small := newEnv(t, withConfig(func(c *Config) { c.HTTP.MaxBodyBytes = 64 << 10 }))
	sbase := trServeHTTP(t, small)
	r = trPost(t, sbase+"/mcp", "", "", trInitBody)
	_ = r.Body.Close()
	// Small enough for the socket buffers: the client finishes writing
	// before it reads the early 413.
	over := `{"jsonrpc":"2.0","id":8,"method":"ping","params":{"_meta":{"pad":"` + strings.Repeat("a", 100<<10) + `"}}}`
	code, body := ssDo(t, http.MethodPost, sbase+"/mcp", "", r.Header.Get("Mcp-Session-Id"), over)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "65536 bytes") {
		t.Fatalf("with http.max_body_bytes 65536: %d %.300s, want 413 naming 65536 bytes", code, body)
	}
}

// hlRaiseFiles raises the open-file limit to its hard maximum and returns
// how many connections (each two descriptors here: client and server end)
// the test may open.
func hlRaiseFiles(t *testing.T, want int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if room := int(lim.Cur/2) - 500; room < want {
		t.Logf("open-file limit %d: scaling %d connections down to %d", lim.Cur, want, room)
		return room
	}
	return want
}

// TestHTTPSlowConnectionsAreClosed is issue 9's other attack: 3,000
// connections that trickle their headers or their body were all still open
// after 25 s. With short limits from the config, every one is closed by the
// server (408 for a body, a closed connection for headers), and the heap
// stays bounded.
func TestHTTPSlowConnectionsAreClosed(t *testing.T) {
	conns := hlRaiseFiles(t, 3000)
	e := newEnv(t, withQuietLogs(), withConfig(func(c *Config) {
		c.HTTP.ReadHeaderTimeout = 2 * time.Second
		c.HTTP.BodyReadTimeout = 2 * time.Second
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ListenAndServe(ctx, ln) }()
	t.Cleanup(func() { stop(); <-served })
	addr := ln.Addr().String()

	growth := hlHeap()
	var closed, timedOut, refused, openFailed atomic.Int64
	var wg sync.WaitGroup
	guard := time.Now().Add(90 * time.Second) // hang guard only
	for i := range conns {
		wg.Add(1)
		go func(slowBody bool) {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err != nil {
				openFailed.Add(1)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(guard)
			head := "POST /mcp HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
			if slowBody {
				head += "\r\n"
			}
			if _, err := io.WriteString(c, head); err != nil {
				closed.Add(1)
				return
			}
			// Trickle a byte at a time (of the body, or of one more header)
			// until the server gives up on us.
			stopTrickle := make(chan struct{})
			go func() {
				tick := time.NewTicker(300 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stopTrickle:
						return
					case <-tick.C:
						if _, err := c.Write([]byte("x")); err != nil {
							return
						}
					}
				}
			}()
			resp, err := io.ReadAll(bufio.NewReader(c))
			close(stopTrickle)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				timedOut.Add(1)
				return
			}
			closed.Add(1)
			if strings.HasPrefix(string(resp), "HTTP/1.1 408") {
				refused.Add(1)
			}
		}(i%2 == 0)
	}
	wg.Wait()
	grew := growth()
	t.Logf("%d slow connections: %d closed by the server (%d with a 408), %d still open at the hang guard, %d could not open; heap grew by at most %.1f MiB",
		conns, closed.Load(), refused.Load(), timedOut.Load(), openFailed.Load(), float64(grew)/(1<<20))
	if timedOut.Load() != 0 || closed.Load()+openFailed.Load() != int64(conns) {
		t.Fatalf("%d of %d slow connections were still open at the hang guard", timedOut.Load(), conns)
	}
	if refused.Load() < closed.Load()/2-int64(conns)/20 {
		t.Errorf("only %d slow bodies got a 408 (want about half of %d)", refused.Load(), closed.Load())
	}
	if grew > 256<<20 {
		t.Errorf("the heap grew by %d MiB under %d slow connections, want < 256 MiB", grew>>20, conns)
	}
}

// TestHTTPLongResponsesOutliveTheBodyDeadline: the body deadline is
// per request and ends with the body, so a call waiting for a human and an
// SSE stream stay open well past it.
func TestHTTPLongResponsesOutliveTheBodyDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.HTTP.BodyReadTimeout = 500 * time.Millisecond
		c.Approvals.Wait = 5 * time.Minute
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ListenAndServe(ctx, ln) }()
	t.Cleanup(func() { stop(); <-served })
	base := "http://" + ln.Addr().String()

	resp, endpoint, cancel := trOpenSSE(t, base, "")
	defer cancel()
	defer resp.Body.Close()
	stream := ssCollect(resp.Body)
	ssDo(t, http.MethodPost, base+endpoint, "", "", trInitBody)
	stream.waitFor(t, 1)

	r := trPost(t, base+"/mcp", "", "", trInitBody)
	_ = r.Body.Close()
	sid := r.Header.Get("Mcp-Session-Id")
	done := make(chan string, 1)
	go func() {
		_, body := ssDo(t, http.MethodPost, base+"/mcp", "", sid,
			`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":"outlives-deadline.dev","reason":"a long wait"}}}`)
		done <- body
	}()
	var pending []approvals.Request
	for deadline := time.Now().Add(60 * time.Second); len(pending) == 0 && time.Now().Before(deadline); {
		pending, _ = e.srv.Approvals().List(context.Background(), approvals.StatePending)
		time.Sleep(20 * time.Millisecond)
	}
	if len(pending) != 1 {
		t.Fatalf("%d pending approvals, want 1", len(pending))
	}
	// Several body deadlines pass while the human decides.
	time.Sleep(2 * time.Second)
	e.approve(pending[0].OperationID, "bob")
	if got := <-done; !strings.Contains(got, `"status":"succeeded","tool":"register_domain"`) {
		t.Fatalf("the call waiting for a human did not finish: %.300s", got)
	}
	if code, body := ssDo(t, http.MethodPost, base+endpoint, "", "", `{"jsonrpc":"2.0","id":10,"method":"ping"}`); code != http.StatusAccepted {
		t.Fatalf("ping on the SSE session: %d %s", code, body)
	}
	stream.waitFor(t, 10)
}

// TestHTTPInFlightCapPerAgent: an agent at its cap gets 429 with
// Retry-After naming the cap; another agent, the agent's GET streams and
// its next call once one finishes are unaffected.
func TestHTTPInFlightCapPerAgent(t *testing.T) {
	t.Parallel()
	e, base, tokA, tokB := ssTwoAgents(t, withConfig(func(c *Config) {
		c.HTTP.MaxInFlightPerAgent = 2
		c.Approvals.Wait = 5 * time.Minute
	}))
	open := func(tok string) string {
		r := trPost(t, base+"/mcp", tok, "", trInitBody)
		_ = r.Body.Close()
		sid := r.Header.Get("Mcp-Session-Id")
		n := trPost(t, base+"/mcp", tok, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		_ = n.Body.Close()
		return sid
	}
	sidA, sidB := open(tokA), open(tokB)
	done := make(chan string, 2)
	for i, d := range []string{"cap-one.dev", "cap-two.dev"} {
		go func() {
			_, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, sidA, fmt.Sprintf(
				`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":%q,"reason":"fill the cap"}}}`, 20+i, d))
			done <- body
		}()
	}
	var pending []approvals.Request
	for deadline := time.Now().Add(60 * time.Second); len(pending) < 2 && time.Now().Before(deadline); {
		pending, _ = e.srv.Approvals().List(context.Background(), approvals.StatePending)
		time.Sleep(20 * time.Millisecond)
	}
	if len(pending) != 2 {
		t.Fatalf("%d pending approvals, want 2", len(pending))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":30,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", tokA)
	req.Header.Set("Mcp-Session-Id", sidA)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(b), "2 MCP requests in flight") || !strings.Contains(string(b), "max_in_flight_per_agent") {
		t.Fatalf("a third request at a cap of 2: %s (Retry-After %q) %s, want 429 naming the cap", resp.Status, resp.Header.Get("Retry-After"), b)
	}
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokB, sidB, `{"jsonrpc":"2.0","id":31,"method":"ping"}`); code != http.StatusOK {
		t.Fatalf("another agent at the same time: %d %s", code, body)
	}
	// A's GET stream is not a request in flight.
	sse, endpoint, cancelSSE := trOpenSSE(t, base, tokA)
	defer cancelSSE()
	defer sse.Body.Close()
	if endpoint == "" {
		t.Fatalf("A's SSE stream at its cap: %s", sse.Status)
	}

	e.approve(pending[0].OperationID, "bob")
	<-done
	if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, sidA, `{"jsonrpc":"2.0","id":32,"method":"ping"}`); code != http.StatusOK {
		t.Fatalf("A once a call finished: %d %s", code, body)
	}
	e.approve(pending[1].OperationID, "bob")
	<-done
}

// TestHTTPInFlightCapCountsSSEWork: /message answers 202 before the work,
// so a request posted there holds its slot until its response goes out on
// the stream; a stream that ends releases what it held.
func TestHTTPInFlightCapCountsSSEWork(t *testing.T) {
	t.Parallel()
	e, base, tokA, _ := ssTwoAgents(t, withConfig(func(c *Config) {
		c.HTTP.MaxInFlightPerAgent = 2
		c.Approvals.Wait = 5 * time.Minute
	}))
	resp, endpoint, cancel := trOpenSSE(t, base, tokA)
	defer cancel()
	defer resp.Body.Close()
	stream := ssCollect(resp.Body)
	ssDo(t, http.MethodPost, base+endpoint, tokA, "", trInitBody)
	stream.waitFor(t, 1)
	ssDo(t, http.MethodPost, base+endpoint, tokA, "", `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	// Answered requests gave their slots back.
	for i := range 5 {
		ssDo(t, http.MethodPost, base+endpoint, tokA, "", fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, 100+i))
		stream.waitFor(t, 100+i)
	}
	for i, d := range []string{"sse-cap-one.dev", "sse-cap-two.dev"} {
		if code, body := ssDo(t, http.MethodPost, base+endpoint, tokA, "", fmt.Sprintf(
			`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"register_domain","arguments":{"domain":%q,"reason":"fill the cap"}}}`, 20+i, d)); code != http.StatusAccepted {
			t.Fatalf("call %d: %d %s", i, code, body)
		}
	}
	var pending []approvals.Request
	for deadline := time.Now().Add(60 * time.Second); len(pending) < 2 && time.Now().Before(deadline); {
		pending, _ = e.srv.Approvals().List(context.Background(), approvals.StatePending)
		time.Sleep(20 * time.Millisecond)
	}
	if len(pending) != 2 {
		t.Fatalf("%d pending approvals, want 2", len(pending))
	}
	if code, body := ssDo(t, http.MethodPost, base+endpoint, tokA, "", `{"jsonrpc":"2.0","id":30,"method":"ping"}`); code != http.StatusTooManyRequests {
		t.Fatalf("a third request while two wait on the stream: %d %s, want 429", code, body)
	}
	e.approve(pending[0].OperationID, "bob")
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, a := stream.find(20)
		_, b := stream.find(21)
		if a || b {
			break
		}
	}
	if code, body := ssDo(t, http.MethodPost, base+endpoint, tokA, "", `{"jsonrpc":"2.0","id":31,"method":"ping"}`); code != http.StatusAccepted {
		t.Fatalf("once one was answered: %d %s", code, body)
	}
	stream.waitFor(t, 31)
	// The stream ends with one call still waiting: its slot comes back.
	cancel()
	<-stream.done
	r := trPost(t, base+"/mcp", tokA, "", trInitBody)
	_ = r.Body.Close()
	sid := r.Header.Get("Mcp-Session-Id")
	for i := range 2 {
		if code, body := ssDo(t, http.MethodPost, base+"/mcp", tokA, sid, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, 40+i)); code != http.StatusOK {
			t.Fatalf("after the stream ended, request %d: %d %s (a slot was kept)", i, code, body)
		}
	}
	e.approve(pending[1].OperationID, "bob")
}
