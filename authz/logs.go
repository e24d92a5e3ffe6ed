package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
)

// maxLogLine caps one forwarded cerbos log line; longer lines are truncated
// so a runaway child cannot grow our memory.
const maxLogLine = 64 << 10

// PolicyError is a policy change the managed PDP refused. Cerbos keeps
// serving the last policy set that compiled; this records what was refused.
type PolicyError struct {
	// File is the policy file relative to the policy folder, when known.
	File string
	// Message is Cerbos's error text.
	Message string
	// At is when tollgate saw the error.
	At time.Time
}

// policyFileRE finds "path/to/file.yaml:12:3:" in Cerbos compile errors.
var policyFileRE = regexp.MustCompile(`([A-Za-z0-9_.\-/]+\.(?:ya?ml|json)):\d+:\d+`)

// policyLoggers are the Cerbos components that report policy load and
// compile failures while watching the policy folder.
var policyLoggers = map[string]bool{
	"cerbos.ruletable": true,
	"cerbos.dir.watch": true,
	"cerbos.index":     true,
	"cerbos.compile":   true,
	"cerbos.schema":    true,
}

// logForwarder turns the child's JSON log lines into slog records. It is an
// io.Writer so exec.Cmd copies the pipe for us and Wait waits for the copy.
type logForwarder struct {
	log      *slog.Logger
	stderr   bool // plain-text lines on stderr are errors (e.g. kong's "cerbos: error:")
	onPolicy func(PolicyError)
	now      func() time.Time
	ready    func() bool // whether the child has answered yet; nil = not yet

	mu      sync.Mutex
	partial []byte
	errs    []string // last few error-level messages, for start-up failures
}

// keptErrors is how many error lines a start-up failure report quotes.
const keptErrors = 3

func (f *logForwarder) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(f.partial)
			if room > 0 {
				f.partial = append(f.partial, p[:min(room, len(p))]...)
			}
			break
		}
		line := p[:i]
		p = p[i+1:]
		if len(f.partial) > 0 {
			room := maxLogLine - len(f.partial)
			if room > 0 {
				f.partial = append(f.partial, line[:min(room, len(line))]...)
			}
			line = f.partial
			f.partial = nil
		} else if len(line) > maxLogLine {
			line = line[:maxLogLine]
		}
		f.handle(line)
	}
	return n, nil
}

// flush forwards an unterminated last line.
func (f *logForwarder) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.partial) > 0 {
		f.handle(f.partial)
		f.partial = nil
	}
}

// lastErrors returns the last error-level messages the child logged, oldest first.
func (f *logForwarder) lastErrors() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.errs...)
}

// cerbosLine is one parsed log line.
type cerbosLine struct {
	level   slog.Level
	logger  string
	message string
	fields  map[string]any
	policy  *PolicyError
}

// parseCerbosLine parses a Cerbos (zap/ECS JSON) log line, or treats it as
// plain text. It never fails: unknown shapes are forwarded verbatim.
func parseCerbosLine(line []byte, stderr bool) cerbosLine {
	line = bytes.TrimSpace(line)
	var raw map[string]any
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &raw) != nil {
		lvl := slog.LevelInfo
		if stderr {
			lvl = slog.LevelError
		}
		return cerbosLine{level: lvl, message: strings.ToValidUTF8(string(line), "\uFFFD")}
	}
	cl := cerbosLine{level: slog.LevelInfo}
	if s, ok := raw["log.level"].(string); ok {
		cl.level = zapLevel(s)
	}
	cl.logger, _ = raw["log.logger"].(string)
	cl.message, _ = raw["message"].(string)
	for _, k := range []string{"log.level", "log.logger", "message", "@timestamp", "ecs.version", "log.origin"} {
		delete(raw, k)
	}
	if len(raw) > 0 {
		cl.fields = raw
	}
	for _, q := range quietMessages {
		if strings.HasPrefix(cl.message, q) {
			cl.level = slog.LevelDebug
		}
	}
	if cl.level >= slog.LevelWarn && policyLoggers[cl.logger] {
		pe := &PolicyError{Message: cl.message}
		if e, ok := raw["error"].(string); ok && e != "" {
			pe.Message = cl.message + ": " + e
		}
		if file, ok := raw["file"].(string); ok {
			pe.File = file
		} else if m := policyFileRE.FindStringSubmatch(pe.Message); m != nil {
			pe.File = m[1]
		} else if file := firstImportingFile(raw); file != "" {
			pe.File = file
		}
		cl.policy = pe
	}
	return cl
}

// firstImportingFile digs the file out of an "Index build failed" record.
func firstImportingFile(raw map[string]any) string {
	for _, key := range []string{"missing", "load_failures", "duplicates"} {
		list, _ := raw[key].([]any)
		for _, item := range list {
			m, _ := item.(map[string]any)
			for _, k := range []string{"importing_file", "file"} {
				if s, ok := m[k].(string); ok && s != "" {
					return s
				}
			}
		}
	}
	return ""
}

// quietMessages are Cerbos notices that make no sense for a private PDP on a
// unix socket (no tracing endpoint, Hub advertising, access logs); they are
// kept at DEBUG so WARN stays meaningful.
var quietMessages = []string{
	"Disabling OTLP traces because",
	"Cerbos Hub offers features",
	"Handled request", // per-request access log at Cerbos's info level
}

func zapLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "warn", "warning":
		return slog.LevelWarn
	default: // error, dpanic, panic, fatal and anything unknown
		return slog.LevelError
	}
}

func (f *logForwarder) handle(line []byte) {
	cl := parseCerbosLine(line, f.stderr)
	if cl.message == "" && cl.fields == nil {
		return
	}
	if cl.level >= slog.LevelError || cl.policy != nil {
		msg := cl.message
		if cl.policy != nil {
			msg = cl.policy.Message
			if cl.policy.File != "" {
				msg = cl.policy.File + ": " + msg
			}
		} else if e, ok := cl.fields["error"].(string); ok && e != "" {
			msg += ": " + e
		}
		f.errs = append(f.errs, msg)
		if len(f.errs) > keptErrors {
			f.errs = f.errs[len(f.errs)-keptErrors:]
		}
	}
	if cl.policy != nil {
		cl.policy.At = f.now()
		// Cerbos reports refused changes at WARN and carries on with the old
		// rules, which is easy to miss; a policy the team believes is live
		// but is not must be loud.
		msg := "cerbos cannot load the policy set; the PDP will not start until it is fixed"
		if f.ready != nil && f.ready() {
			msg = "cerbos refused a policy change; still serving the last good policy set"
		}
		f.log.LogAttrs(context.Background(), slog.LevelError, msg,
			slog.String("file", cl.policy.File),
			slog.String("error", cl.policy.Message),
			slog.String("logger", cl.logger))
		if f.onPolicy != nil {
			f.onPolicy(*cl.policy)
		}
		return
	}
	attrs := make([]slog.Attr, 0, 2)
	if cl.logger != "" {
		attrs = append(attrs, slog.String("logger", cl.logger))
	}
	if cl.fields != nil {
		attrs = append(attrs, slog.Any("fields", cl.fields))
	}
	msg := cl.message
	if msg == "" {
		msg = "cerbos log line without a message"
	}
	f.log.LogAttrs(context.Background(), cl.level, msg, attrs...)
}
