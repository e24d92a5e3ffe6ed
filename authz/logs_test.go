package authz

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Lines below are verbatim shapes Cerbos 0.55 prints (see the broken-policy
// integration test for the live versions).
func TestParseCerbosLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		line      string
		stderr    bool
		level     slog.Level
		message   string
		logger    string
		policy    bool
		file      string
		errSubstr string
	}{
		{
			name:  "info",
			line:  `{"log.level":"info","@timestamp":"2026-11-22T00:16:18.133Z","log.logger":"cerbos.grpc","message":"Starting gRPC server at unix:/tmp/x/cerbos.sock"}`,
			level: slog.LevelInfo, message: "Starting gRPC server at unix:/tmp/x/cerbos.sock", logger: "cerbos.grpc",
		},
		{
			name:  "noise is demoted",
			line:  `{"log.level":"warn","log.logger":"cerbos.otel","message":"Disabling OTLP traces because neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is defined"}`,
			level: slog.LevelDebug, logger: "cerbos.otel",
		},
		{
			name:  "compile error while watching",
			line:  `{"log.level":"warn","log.logger":"cerbos.ruletable","message":"Error processing storage event, maintaining last valid state","event":"ADD/UPDATE [1]","error":"failed to load policy: policy compilation error: 1 compilation errors:\nresource_policies/operation.yaml:33:11: Invalid expression ` + "`R.attr.agent !=== P.id`" + `"}`,
			level: slog.LevelWarn, logger: "cerbos.ruletable", policy: true,
			file: "resource_policies/operation.yaml", errSubstr: "Invalid expression",
		},
		{
			name:  "unparsable file while watching",
			line:  `{"log.level":"warn","log.logger":"cerbos.dir.watch","message":"Failed to read policy from file","dir":"/p","file":"resource_policies/broken.yaml","error":"1:1 unknown field \"bad\""}`,
			level: slog.LevelWarn, logger: "cerbos.dir.watch", policy: true,
			file: "resource_policies/broken.yaml", errSubstr: `unknown field "bad"`,
		},
		{
			name:  "missing import while watching",
			line:  `{"log.level":"warn","log.logger":"cerbos.ruletable","message":"Error processing storage event, maintaining last valid state","error":"failed to load dependencies of resource.worker_script.vdefault: policy not found"}`,
			level: slog.LevelWarn, logger: "cerbos.ruletable", policy: true, errSubstr: "policy not found",
		},
		{
			name:  "index build failure at start-up",
			line:  `{"log.level":"error","log.logger":"cerbos.index","message":"Index build failed","missing":[{"importing_file":"resource_policies/worker_script.yaml","desc":"cannot find derived roles 'nope'"}]}`,
			level: slog.LevelError, logger: "cerbos.index", policy: true, file: "resource_policies/worker_script.yaml",
		},
		{
			name:  "debug from a policy logger is not an error",
			line:  `{"log.level":"debug","log.logger":"cerbos.dir.watch","message":"Detected file update","file":"a.yaml"}`,
			level: slog.LevelDebug, logger: "cerbos.dir.watch",
		},
		{
			name: "plain text on stderr is an error", stderr: true,
			line:  `cerbos: error: failed to create store: failed to build index`,
			level: slog.LevelError, message: "cerbos: error: failed to create store: failed to build index",
		},
		{
			name:  "plain text on stdout",
			line:  `hello`,
			level: slog.LevelInfo, message: "hello",
		},
		{
			name:  "broken json is kept verbatim",
			line:  `{"log.level":"info",`,
			level: slog.LevelInfo, message: `{"log.level":"info",`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := parseCerbosLine([]byte(tt.line), tt.stderr)
			if got.level != tt.level || got.logger != tt.logger {
				t.Errorf("level/logger = %v %q, want %v %q", got.level, got.logger, tt.level, tt.logger)
			}
			if tt.message != "" && got.message != tt.message {
				t.Errorf("message = %q, want %q", got.message, tt.message)
			}
			if (got.policy != nil) != tt.policy {
				t.Fatalf("policy error = %+v, want %v", got.policy, tt.policy)
			}
			if got.policy == nil {
				return
			}
			if got.policy.File != tt.file {
				t.Errorf("file = %q, want %q", got.policy.File, tt.file)
			}
			if !strings.Contains(got.policy.Message, tt.errSubstr) {
				t.Errorf("message %q does not contain %q", got.policy.Message, tt.errSubstr)
			}
		})
	}
}

func TestLogForwarderSplitsAndPromotes(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	var policy []PolicyError
	ready := false
	f := &logForwarder{
		log:      slog.New(rec),
		now:      func() time.Time { return time.Unix(1, 0) },
		ready:    func() bool { return ready },
		onPolicy: func(pe PolicyError) { policy = append(policy, pe) },
	}
	watchErr := `{"log.level":"warn","log.logger":"cerbos.dir.watch","message":"Failed to read policy from file","file":"a.yaml","error":"boom"}`
	// Lines arrive cut at arbitrary points.
	input := `{"log.level":"info","log.logger":"cerbos.index","message":"Found 4 executable policies"}` + "\n" + watchErr + "\n"
	for _, chunk := range []string{input[:17], input[17:120], input[120:]} {
		if _, err := f.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := rec.find(slog.LevelInfo, "Found 4 executable policies", nil); !ok {
		t.Error("the info line was not forwarded")
	}
	if _, ok := rec.find(slog.LevelError, "cerbos cannot load the policy set", func(a map[string]string) bool {
		return a["file"] == "a.yaml" && a["error"] == "Failed to read policy from file: boom"
	}); !ok {
		t.Error("a policy error before readiness was not logged at ERROR as a start-up failure")
	}
	ready = true
	if _, err := f.Write([]byte(watchErr + "\n")); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.find(slog.LevelError, "still serving the last good policy set", nil); !ok {
		t.Error("a policy error after readiness was not logged as keeping the last good set")
	}
	if _, err := f.Write([]byte("tail without newline")); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.find(slog.LevelInfo, "tail without newline", nil); ok {
		t.Error("an unterminated line was forwarded before flush")
	}
	f.flush()
	if _, ok := rec.find(slog.LevelInfo, "tail without newline", nil); !ok {
		t.Error("flush did not forward the unterminated line")
	}
	if len(policy) != 2 || policy[0].File != "a.yaml" || !policy[0].At.Equal(time.Unix(1, 0)) {
		t.Errorf("onPolicy got %+v", policy)
	}
	if errs := f.lastErrors(); len(errs) != 2 || errs[0] != "a.yaml: Failed to read policy from file: boom" {
		t.Errorf("lastErrors = %q", errs)
	}
}

func TestLogForwarderCapsLongLines(t *testing.T) {
	t.Parallel()
	rec := &logRecorder{}
	f := &logForwarder{log: slog.New(rec), now: time.Now}
	long := strings.Repeat("x", 3*maxLogLine)
	if _, err := f.Write([]byte(long[:maxLogLine+5])); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(long[maxLogLine+5:] + "\n")); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.records) != 1 {
		t.Fatalf("got %d records, want 1", len(rec.records))
	}
	if n := len(rec.records[0].Message); n != maxLogLine {
		t.Fatalf("forwarded %d bytes, want the cap %d", n, maxLogLine)
	}
}
