package ledger

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// An audit key is 32 secret bytes kept in a file outside the database. Two
// keys are derived from it, each for one job:
//
//   - the chain MAC key: every event appended after the key's boundary
//     carries HMAC-SHA-256(mac key, event hash), so rewriting and re-hashing
//     the chain without the key file breaks at the first rewritten event;
//   - an Ed25519 signing key: the boundary, checkpoints, `audit head` and
//     export bundles are signed, so anyone holding only the public key can
//     check them offline.
//
// The key id (the first 16 bytes of SHA-256 of the public key, in hex) is
// recorded in the database on first use; a process with another key is
// refused, so every writer of one chain uses the same key.

const (
	auditKeyHeader = "tollgate-audit-key-v1"
	auditKeySize   = 32
	// maxAuditKeyFile bounds what LoadAuditKey reads: the key line and a comment.
	maxAuditKeyFile = 4096
)

// AuditKey is the secret that keys the audit chain and signs its heads.
type AuditKey struct {
	path    string
	created bool
	mac     []byte
	priv    ed25519.PrivateKey
	pub     ed25519.PublicKey
	id      string
}

// GenerateAuditKey makes a new random key held only in memory (tests, tools
// that write the file themselves). It counts as just created: a database with
// a legacy unkeyed chain may adopt it (see Open).
func GenerateAuditKey() (*AuditKey, error) {
	secret := make([]byte, auditKeySize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate audit key: %w", err)
	}
	k := deriveAuditKey(secret)
	k.created = true
	return k, nil
}

func deriveAuditKey(secret []byte) *AuditKey {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	priv := ed25519.NewKeyFromSeed(derive("tollgate audit signing key v1"))
	pub := priv.Public().(ed25519.PublicKey)
	return &AuditKey{mac: derive("tollgate audit chain mac key v1"), priv: priv, pub: pub, id: KeyIDOf(pub)}
}

// KeyIDOf is the key id of an Ed25519 public key: the first 16 bytes of its
// SHA-256, in hex.
func KeyIDOf(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}

// ID is the key id recorded in the database and printed with every head.
func (k *AuditKey) ID() string { return k.id }

// PublicKey is the Ed25519 key that checks heads, checkpoints and bundles.
func (k *AuditKey) PublicKey() ed25519.PublicKey { return k.pub }

// PublicKeyText is the public key as base64 (the form bundles carry and
// `audit verify --public-key` takes).
func (k *AuditKey) PublicKeyText() string { return base64.StdEncoding.EncodeToString(k.pub) }

// Path is the key file ("" for a key held only in memory).
func (k *AuditKey) Path() string { return k.path }

// Created reports whether this process created the key (LoadOrCreateAuditKey
// found no file, or GenerateAuditKey).
func (k *AuditKey) Created() bool { return k.created }

func (k *AuditKey) where() string {
	if k.path == "" {
		return "an in-memory key"
	}
	return "key file " + k.path
}

// eventMAC is the MAC of an event with the given hash.
func (k *AuditKey) eventMAC(hash string) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(hash))
	return hex.EncodeToString(m.Sum(nil))
}

func (k *AuditKey) sign(msg []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, msg))
}

// verifySignature checks a base64 Ed25519 signature of msg by pub.
func verifySignature(pub ed25519.PublicKey, msg []byte, sig string) bool {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(raw) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize {
		return false
	}
	return ed25519.Verify(pub, msg, raw)
}

// ParsePublicKey reads a base64 Ed25519 public key (as bundles and
// `audit head --json` print it).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key %s: want the %d-byte Ed25519 key in base64 (44 characters), as `tollgate audit head --json` prints it", quoteInput(s), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// LoadAuditKey reads the key file at path, which must exist, be a regular
// file (a symlink to one is followed) and be readable by its owner only.
func LoadAuditKey(path string) (*AuditKey, error) {
	if path == "" {
		return nil, errors.New("audit key: no key file path given")
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("audit key %s does not exist: %w", path, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := checkKeyFileMode(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	defer f.Close()
	// Check the file that was opened, not only the name: it may have been
	// swapped between the two calls.
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if err := checkKeyFileMode(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAuditKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	secret, err := parseAuditKeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	k := deriveAuditKey(secret)
	k.path = path
	return k, nil
}

func checkKeyFileMode(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("audit key %s is not a regular file (it is %s): point the key setting at the key file itself", path, fileKind(fi.Mode()))
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("audit key %s has mode %04o: anyone in its group or on the machine could read or change it; it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// parseAuditKeyFile reads the key line, "tollgate-audit-key-v1 <base64url of
// 32 bytes>"; blank lines and lines starting with # are allowed around it.
func parseAuditKeyFile(b []byte) ([]byte, error) {
	if len(b) > maxAuditKeyFile {
		return nil, fmt.Errorf("the file is larger than %d bytes; a key file holds one line %q", maxAuditKeyFile, auditKeyHeader+" <key>")
	}
	var secret []byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if secret != nil {
			return nil, errors.New("more than one key line; a key file holds exactly one")
		}
		head, enc, ok := strings.Cut(line, " ")
		if !ok || head != auditKeyHeader {
			return nil, fmt.Errorf("not a tollgate audit key: the key line must start with %q", auditKeyHeader)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(enc))
		if err != nil || len(raw) != auditKeySize {
			return nil, fmt.Errorf("the key must be %d bytes in unpadded base64url (43 characters)", auditKeySize)
		}
		secret = raw
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, fmt.Errorf("no key line (%q) in the file", auditKeyHeader+" <key>")
	}
	return secret, nil
}

// LoadOrCreateAuditKey loads the key file at path, creating it (mode 0600,
// its folder 0700) with a new random key when it does not exist. Two
// processes creating it at once end up with the same key: the file appears
// complete or not at all.
func LoadOrCreateAuditKey(path string) (*AuditKey, error) {
	k, err := LoadAuditKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit key: create folder for %s: %w", path, err)
	}
	secret := make([]byte, auditKeySize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate audit key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".audit-key-*")
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	defer os.Remove(tmp.Name())
	body := "# tollgate audit key: it keys the audit chain and signs its heads. Keep it secret,\n" +
		"# back it up, and keep it off the database's disk. Every tollgate process on a\n" +
		"# database must use this same file.\n" +
		auditKeyHeader + " " + base64.RawURLEncoding.EncodeToString(secret) + "\n"
	// CreateTemp makes the file 0600 already; Chmod states it.
	err = errors.Join(tmp.Chmod(0o600), writeAll(tmp, body), tmp.Sync(), tmp.Close())
	if err != nil {
		return nil, fmt.Errorf("audit key: write %s: %w", tmp.Name(), err)
	}
	// Link fails when the name exists: a process that lost the race reads the
	// winner's key instead of replacing it.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadAuditKey(path)
		}
		return nil, fmt.Errorf("audit key: create %s: %w", path, err)
	}
	k = deriveAuditKey(secret)
	k.path, k.created = path, true
	return k, nil
}

func writeAll(w io.Writer, s string) error {
	_, err := io.WriteString(w, s)
	return err
}
