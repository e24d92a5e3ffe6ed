package authz

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// maxUnixSocketPath is the usable length of sun_path on Linux (108 bytes
// including the terminating NUL); a longer path fails only at dial time with
// an obscure error, so it is rejected up front.
const maxUnixSocketPath = 107

// pdpAddr is a parsed PDP address.
type pdpAddr struct {
	unix   bool
	path   string // unix socket path
	host   string // tcp host (may be an IPv6 literal without brackets)
	port   string
	target string // gRPC target string
}

// parseAddr accepts "unix:/absolute/path" or "host:port" and reports what is
// wrong with anything else, naming the accepted forms.
func parseAddr(addr string) (pdpAddr, error) {
	const forms = `want "host:port" (e.g. "localhost:3593") or "unix:/absolute/path.sock"`
	if strings.TrimSpace(addr) == "" {
		return pdpAddr{}, fmt.Errorf("cerbos address is empty: %s", forms)
	}
	if strings.ContainsAny(addr, " \t\r\n") {
		return pdpAddr{}, fmt.Errorf("cerbos address %q contains whitespace: %s", addr, forms)
	}
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		p := strings.TrimPrefix(rest, "//") // tolerate unix:///abs/path
		switch {
		case p == "":
			return pdpAddr{}, fmt.Errorf("cerbos address %q has no socket path: %s", addr, forms)
		case !filepath.IsAbs(p):
			return pdpAddr{}, fmt.Errorf("cerbos address %q: socket path must be absolute: %s", addr, forms)
		case len(p) > maxUnixSocketPath:
			return pdpAddr{}, fmt.Errorf("cerbos address %q: socket path is %d bytes, the limit is %d", addr, len(p), maxUnixSocketPath)
		case strings.ContainsRune(p, 0):
			return pdpAddr{}, fmt.Errorf("cerbos address %q: socket path contains a NUL byte", addr)
		}
		p = filepath.Clean(p)
		return pdpAddr{unix: true, path: p, target: "unix://" + p}, nil
	}
	if strings.Contains(addr, "://") {
		return pdpAddr{}, fmt.Errorf("cerbos address %q: URL schemes are not supported: %s", addr, forms)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return pdpAddr{}, fmt.Errorf("cerbos address %q: %s: %s", addr, ae.Err, forms)
		}
		return pdpAddr{}, fmt.Errorf("cerbos address %q: %w: %s", addr, err, forms)
	}
	if host == "" {
		return pdpAddr{}, fmt.Errorf("cerbos address %q has no host: %s", addr, forms)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return pdpAddr{}, fmt.Errorf("cerbos address %q: port %q must be a number 1-65535: %s", addr, port, forms)
	}
	return pdpAddr{host: host, port: port, target: "dns:///" + net.JoinHostPort(host, port)}, nil
}

// String renders the address in the form parseAddr accepts.
func (a pdpAddr) String() string {
	if a.unix {
		return "unix:" + a.path
	}
	return net.JoinHostPort(a.host, a.port)
}
