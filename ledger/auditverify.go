package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// SignedHead says, under the audit key's Ed25519 signature, that the chain
// had event Seq with hash Hash at time At. `tollgate audit head` prints one,
// the server writes them as checkpoints, and a saved one is an anchor for
// `audit verify --anchor`: events at or before it can no longer disappear or
// change unnoticed. Seq 0 with the genesis hash is the head of an empty chain.
type SignedHead struct {
	Seq       int64     `json:"seq"`
	Hash      string    `json:"hash"`
	At        time.Time `json:"at"`
	KeyID     string    `json:"key_id"`
	Signature string    `json:"signature"`
	// PublicKey is informational (to pin a bundle with); verification always
	// uses the verifier's own key, never the one a head brings along.
	PublicKey string `json:"public_key,omitempty"`
}

// Anchor is a saved head and where it came from (a file, a checkpoint log),
// for messages.
type Anchor struct {
	Source string
	Head   SignedHead
}

var (
	hexHashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	keyIDRE   = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

func signedMessage(kind, keyID string, seq int64, hash string, at time.Time) []byte {
	msg := "tollgate audit " + kind + " v1\n" + keyID + "\n" + strconv.FormatInt(seq, 10) + "\n" + hash + "\n"
	if !at.IsZero() {
		msg += at.UTC().Format(time.RFC3339Nano) + "\n"
	}
	return []byte(msg)
}

func (k *AuditKey) signHead(seq int64, hash string, at time.Time) SignedHead {
	at = time.Unix(0, at.UnixNano()).UTC()
	return SignedHead{
		Seq: seq, Hash: hash, At: at, KeyID: k.id, PublicKey: k.PublicKeyText(),
		Signature: k.sign(signedMessage("head", k.id, seq, hash, at)),
	}
}

// Check reports whether h is well formed and signed by pub.
func (h SignedHead) Check(pub ed25519.PublicKey) error {
	if err := h.wellFormed(); err != nil {
		return err
	}
	if want := KeyIDOf(pub); h.KeyID != want {
		return fmt.Errorf("it was signed by key %s, not by this chain's key %s", h.KeyID, want)
	}
	if !verifySignature(pub, signedMessage("head", h.KeyID, h.Seq, h.Hash, h.At), h.Signature) {
		return fmt.Errorf("its signature does not verify with key %s: it was forged or altered", h.KeyID)
	}
	return nil
}

func (h SignedHead) wellFormed() error {
	switch {
	case h.Seq < 0:
		return fmt.Errorf("seq %d is negative", h.Seq)
	case !hexHashRE.MatchString(h.Hash):
		return fmt.Errorf("hash %s is not 64 lower-case hex digits", quoteInput(h.Hash))
	case h.At.IsZero():
		return errors.New("at is missing")
	case !keyIDRE.MatchString(h.KeyID):
		return fmt.Errorf("key_id %s is not 32 lower-case hex digits", quoteInput(h.KeyID))
	case h.Signature == "":
		return errors.New("signature is missing")
	}
	return nil
}

// keyRecord is the audit_keys row: the key every writer must use and the
// boundary it signed when first used.
type keyRecord struct {
	KeyID, PublicKey string
	BoundarySeq      int64
	BoundaryHash     string
	At               time.Time
	Signature        string
}

func (r *keyRecord) valid(pub ed25519.PublicKey) bool {
	return r.KeyID == KeyIDOf(pub) &&
		verifySignature(pub, signedMessage("boundary", r.KeyID, r.BoundarySeq, r.BoundaryHash, r.At), r.Signature)
}

func readKeyRecord(ctx context.Context, q store.Queryer) (*keyRecord, error) {
	var r keyRecord
	var at int64
	err := q.QueryRowContext(ctx, `SELECT key_id, public_key, boundary_seq, boundary_hash, at, signature FROM audit_keys WHERE id = 1`).
		Scan(&r.KeyID, &r.PublicKey, &r.BoundarySeq, &r.BoundaryHash, &at, &r.Signature)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit key record: %w", err)
	}
	r.At = time.Unix(0, at).UTC()
	return &r, nil
}

// KeyRequiredError is returned to a process without the audit key that tries
// to append to (or verify) a keyed chain.
type KeyRequiredError struct {
	Path  string // the database
	KeyID string // the key its chain is keyed with
}

func (e *KeyRequiredError) Error() string {
	return fmt.Sprintf("the audit chain of %s is keyed with audit key %s, and this process has no audit key: it may read but not append to or verify the chain; give it the key file every tollgate process on this database uses (--audit-key, TOLLGATE_AUDIT_KEY_FILE or audit.key_file)", e.Path, e.KeyID)
}

// KeyMismatchError refuses a process whose audit key is not the one the
// database's chain is keyed with.
type KeyMismatchError struct {
	Path     string // the database
	Recorded string // the key id recorded in the database
	KeyID    string // this process's key id
	KeyFile  string // this process's key file ("" for an in-memory key)
	Created  bool   // the key file did not exist and was just created
}

func (e *KeyMismatchError) Error() string {
	file := e.KeyFile
	if file == "" {
		file = "an in-memory key"
	}
	msg := fmt.Sprintf("audit key mismatch: %s is keyed with audit key %s, but %s holds key %s; every tollgate process on one database must use the same key file (--audit-key, TOLLGATE_AUDIT_KEY_FILE or audit.key_file)", e.Path, e.Recorded, file, e.KeyID)
	if e.Created {
		msg += "; " + file + " did not exist and was just created: point the setting at the key file this database was first used with"
	}
	return msg
}

// UnkeyedChainError refuses to sign an existing unkeyed chain as genuine with
// a key that was not just created (see WithAuditKey).
type UnkeyedChainError struct {
	Path    string
	Events  int64
	KeyFile string
}

func (e *UnkeyedChainError) Error() string {
	return fmt.Sprintf("%s holds %d audit events with plain hashes and records no audit key, but the key file %s already existed: "+
		"if this is an old database being upgraded with a key made for another one, run `tollgate audit adopt-key` to sign its current head as the boundary; "+
		"if it was keyed before, its key record was deleted (tampering): check it against a saved head with `tollgate audit verify --anchor FILE`", e.Path, e.Events, e.KeyFile)
}

// ChainBrokenError is the failure of an operation that needs an intact chain
// (signing a head, a checkpoint or a bundle).
type ChainBrokenError struct{ Report VerifyReport }

func (e *ChainBrokenError) Error() string {
	if e.Report.BrokenSeq > 0 {
		return fmt.Sprintf("audit chain broken at event %d: %s", e.Report.BrokenSeq, e.Report.Reason)
	}
	return "audit chain broken: " + e.Report.Reason
}

// adoptAuditKey records db.key as the chain's key on its first use (signing
// the current head as the boundary: events up to it keep plain hashes), or
// checks that it is the recorded one.
func (db *DB) adoptAuditKey(ctx context.Context, allowLegacy bool) error {
	var adopted *keyRecord
	err := db.st.Write(ctx, func(tx *store.Tx) error {
		q := tx
		rec, err := readKeyRecord(ctx, q)
		if err != nil {
			return err
		}
		if rec != nil {
			if rec.KeyID != db.key.id {
				return &KeyMismatchError{Path: db.st.String(), Recorded: rec.KeyID, KeyID: db.key.id, KeyFile: db.key.path, Created: db.key.created}
			}
			return nil
		}
		rep, tip, err := scanChain(ctx, q, nil, nil, chainTip{hash: genesisHash}, nil, nil)
		if err != nil {
			return err
		}
		if !rep.OK {
			return fmt.Errorf("cannot key the audit chain with %s: the existing chain does not verify: %w", db.key.where(), &ChainBrokenError{Report: rep})
		}
		if tip.seq > 0 && !allowLegacy {
			return &UnkeyedChainError{Path: db.st.String(), Events: tip.seq, KeyFile: db.key.path}
		}
		now := time.Unix(0, db.now().UnixNano()).UTC()
		adopted = &keyRecord{KeyID: db.key.id, PublicKey: db.key.PublicKeyText(), BoundarySeq: tip.seq, BoundaryHash: tip.hash, At: now,
			Signature: db.key.sign(signedMessage("boundary", db.key.id, tip.seq, tip.hash, now))}
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_keys (id, key_id, public_key, boundary_seq, boundary_hash, at, signature) VALUES (1, ?, ?, ?, ?, ?, ?)`,
			adopted.KeyID, adopted.PublicKey, adopted.BoundarySeq, adopted.BoundaryHash, now.UnixNano(), adopted.Signature); err != nil {
			return fmt.Errorf("record audit key: %w", err)
		}
		return insertCheckpoint(ctx, q, db.key.signHead(tip.seq, tip.hash, now))
	})
	if err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	if adopted != nil {
		db.log.InfoContext(ctx, "audit chain keyed", slog.String("key_id", adopted.KeyID), slog.String("key_file", db.key.path),
			slog.Int64("plain_events", adopted.BoundarySeq), slog.String("boundary_hash", adopted.BoundaryHash))
	}
	return nil
}

func insertCheckpoint(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, h SignedHead) error {
	if _, err := q.ExecContext(ctx, `INSERT INTO audit_checkpoints (seq, hash, at, key_id, signature) VALUES (?, ?, ?, ?, ?) ON CONFLICT (seq) DO NOTHING`,
		h.Seq, h.Hash, h.At.UnixNano(), h.KeyID, h.Signature); err != nil {
		return fmt.Errorf("record audit checkpoint: %w", err)
	}
	return nil
}

// VerifyReport is the result of recomputing the audit chain.
type VerifyReport struct {
	Checked int64 `json:"checked"`
	OK      bool  `json:"ok"`
	// BrokenSeq is the first event that does not verify or is missing; 0 when
	// what failed is not an event (the key record, a checkpoint's or an
	// anchor's signature): Reason says what.
	BrokenSeq int64  `json:"broken_seq,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// KeyID is the audit key the chain is keyed with ("" for a legacy chain).
	KeyID string `json:"key_id,omitempty"`
	// Boundary is the last event with a plain hash; every later one carries
	// the key's MAC.
	Boundary int64 `json:"boundary,omitempty"`
	// Heads is how many signed heads (checkpoints, anchors) matched the chain.
	Heads int `json:"heads_matched,omitempty"`
}

func (r *VerifyReport) fail(seq int64, format string, args ...any) {
	r.BrokenSeq, r.Reason = seq, fmt.Sprintf(format, args...)
}

// chainTip is a position in the chain: the last event's seq and hash.
type chainTip struct {
	seq  int64
	hash string
}

// scanChain checks the events after from, in seq order: no gap, each linked
// to the one before, each hash recomputed from its content; when rec is set,
// the event at the boundary equals the signed boundary and every later event
// carries key's MAC; when rec is nil, no event may carry a MAC (the record
// would have been deleted). Each mark (a signed head already checked) must
// equal the event at its seq, and none may lie beyond the last event. each,
// when set, sees every event that passed. It stops at the first failure,
// which the report names.
func scanChain(ctx context.Context, q store.Queryer, key *AuditKey, rec *keyRecord, from chainTip, marks []Anchor, each func(Event) error) (VerifyReport, chainTip, error) {
	rep := VerifyReport{OK: true}
	sort.SliceStable(marks, func(i, j int) bool { return marks[i].Head.Seq < marks[j].Head.Seq })
	for len(marks) > 0 && marks[0].Head.Seq <= from.seq {
		if marks[0].Head.Seq == from.seq && marks[0].Head.Hash != from.hash {
			rep.fail(from.seq, "event %d differs from the head saved in %s", from.seq, marks[0].Source)
			rep.OK = false
			return rep, from, nil
		}
		rep.Heads++
		marks = marks[1:]
	}
	rows, err := q.QueryContext(ctx, `SELECT `+eventColumns+` FROM audit_events WHERE seq > ? ORDER BY seq`, from.seq)
	if err != nil {
		return rep, from, fmt.Errorf("read audit events: %w", err)
	}
	defer rows.Close()
	tip := from
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return rep, tip, fmt.Errorf("read audit events: %w", err)
		}
		switch {
		case e.Seq != tip.seq+1:
			// seq is contiguous by construction, so a gap is a deleted row;
			// the first missing number is the broken link.
			rep.fail(tip.seq+1, "event %d is missing (the chain jumps from %d to %d): deleted or renumbered", tip.seq+1, tip.seq, e.Seq)
		case e.PrevHash != tip.hash:
			rep.fail(e.Seq, "event %d does not link to event %d: its prev_hash differs from that event's hash (reordered, inserted or edited)", e.Seq, e.Seq-1)
		case chainHash(e.PrevHash, e.Seq, e.At, e.Type, e.Actor, e.OperationID, e.Data) != e.Hash:
			rep.fail(e.Seq, "event %d does not match its hash: its content was edited", e.Seq)
		case rec == nil && e.MAC != "":
			rep.fail(e.Seq, "event %d carries an audit key MAC but the database records no audit key: its key record was deleted", e.Seq)
		case rec != nil && e.Seq == rec.BoundarySeq && e.Hash != rec.BoundaryHash:
			rep.fail(e.Seq, "event %d differs from the boundary signed when the audit key was first used: an event at or before it was edited and the chain re-hashed", e.Seq)
		case rec != nil && e.Seq > rec.BoundarySeq && !hmac.Equal([]byte(e.MAC), []byte(key.eventMAC(e.Hash))):
			rep.fail(e.Seq, "event %d does not carry the audit key's MAC: it was edited, inserted or re-hashed without the key (or with another key)", e.Seq)
		}
		for rep.Reason == "" && len(marks) > 0 && marks[0].Head.Seq == e.Seq {
			if marks[0].Head.Hash != e.Hash {
				rep.fail(e.Seq, "event %d differs from the head saved in %s", e.Seq, marks[0].Source)
			}
			rep.Heads++
			marks = marks[1:]
		}
		if rep.Reason != "" {
			rep.OK = false
			return rep, tip, nil
		}
		if each != nil {
			if err := each(e); err != nil {
				return rep, tip, err
			}
		}
		rep.Checked++
		tip = chainTip{seq: e.Seq, hash: e.Hash}
	}
	if err := rows.Err(); err != nil {
		return rep, tip, fmt.Errorf("read audit events: %w", err)
	}
	switch {
	case rec != nil && tip.seq < rec.BoundarySeq:
		rep.fail(tip.seq+1, "events %d to %d are missing: the chain ends at event %d but the boundary signed when the audit key was first used is event %d", tip.seq+1, rec.BoundarySeq, tip.seq, rec.BoundarySeq)
	case len(marks) > 0:
		m := marks[len(marks)-1]
		rep.fail(tip.seq+1, "events %d to %d are missing: the chain ends at event %d but %s saved head %d (the newest events were deleted)", tip.seq+1, m.Head.Seq, tip.seq, m.Source, m.Head.Seq)
	}
	rep.OK = rep.Reason == ""
	return rep, tip, nil
}

// Verify recomputes every link from the first event, in one read snapshot, and
// reports the first one that is edited, missing, reordered or mislinked. On a
// keyed chain it also checks the key record's signed boundary, every event's
// MAC after it, and that every signed checkpoint in the database and every
// anchor given (a saved head) is signed by the key and still in the chain: an
// anchor beyond the last event means the newest events were deleted.
//
// A process without the key can verify only a legacy unkeyed chain.
func (db *DB) Verify(ctx context.Context, anchors ...Anchor) (VerifyReport, error) {
	var rep VerifyReport
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		var err error
		rep, _, err = db.verifyTx(ctx, tx, anchors, nil)
		return err
	})
	if err != nil {
		return VerifyReport{}, fmt.Errorf("verify audit chain: %w", err)
	}
	return rep, nil
}

func (db *DB) verifyTx(ctx context.Context, q store.Queryer, anchors []Anchor, each func(Event) error) (VerifyReport, chainTip, error) {
	start := chainTip{hash: genesisHash}
	rec, err := readKeyRecord(ctx, q)
	if err != nil {
		return VerifyReport{}, start, err
	}
	key := db.key
	if key == nil {
		switch {
		case rec != nil:
			return VerifyReport{}, start, &KeyRequiredError{Path: db.st.String(), KeyID: rec.KeyID}
		case len(anchors) > 0:
			return VerifyReport{}, start, errors.New("checking signed heads needs the audit key")
		}
		return scanChain(ctx, q, nil, nil, start, nil, each)
	}
	rep := VerifyReport{KeyID: key.id}
	broken := func(format string, args ...any) (VerifyReport, chainTip, error) {
		rep.fail(0, format, args...)
		return rep, start, nil
	}
	switch {
	case rec == nil:
		return broken("the database records no audit key but this process holds key %s: the key record was deleted, or this is not the database the key was used with", key.id)
	case rec.KeyID != key.id:
		return broken("the database's audit key record names key %s but %s holds key %s: the record was replaced, or this is another database", rec.KeyID, key.where(), key.id)
	case !rec.valid(key.pub):
		return broken("the audit key record's signed boundary does not verify with key %s: the record was altered", key.id)
	}
	rep.Boundary = rec.BoundarySeq
	marks := make([]Anchor, 0, len(anchors))
	for _, a := range anchors {
		if err := a.Head.Check(key.pub); err != nil {
			return broken("the head saved in %s is not a valid anchor: %v", a.Source, err)
		}
		marks = append(marks, a)
	}
	cps, err := readCheckpoints(ctx, q, 0)
	if err != nil {
		return VerifyReport{}, start, err
	}
	for _, cp := range cps {
		if err := cp.Check(key.pub); err != nil {
			return broken("the checkpoint at event %d in the database is not valid (a forged row in audit_checkpoints): %v", cp.Seq, err)
		}
		marks = append(marks, Anchor{Source: fmt.Sprintf("the database's checkpoint at event %d", cp.Seq), Head: cp})
	}
	r, tip, err := scanChain(ctx, q, key, rec, start, marks, each)
	r.KeyID, r.Boundary = rep.KeyID, rep.Boundary
	return r, tip, err
}

// readCheckpoints reads the checkpoints with seq >= from, oldest first.
func readCheckpoints(ctx context.Context, q store.Queryer, from int64) ([]SignedHead, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, hash, at, key_id, signature FROM audit_checkpoints WHERE seq >= ? ORDER BY seq`, from)
	if err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []SignedHead
	for rows.Next() {
		var h SignedHead
		var at int64
		if err := rows.Scan(&h.Seq, &h.Hash, &at, &h.KeyID, &h.Signature); err != nil {
			return nil, fmt.Errorf("read audit checkpoints: %w", err)
		}
		h.At = time.Unix(0, at).UTC()
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit checkpoints: %w", err)
	}
	return out, nil
}

// Head verifies the whole chain and signs its last event: the head `tollgate
// audit head` prints and an anchor is saved from. A broken chain is a
// *ChainBrokenError: a tampered head is never signed.
func (db *DB) Head(ctx context.Context, anchors ...Anchor) (SignedHead, error) {
	if db.key == nil {
		return SignedHead{}, errors.New("audit head: signing a head needs the audit key")
	}
	var tip chainTip
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		rep, t, err := db.verifyTx(ctx, tx, anchors, nil)
		if err != nil {
			return err
		}
		if !rep.OK {
			return &ChainBrokenError{Report: rep}
		}
		tip = t
		return nil
	})
	if err != nil {
		return SignedHead{}, fmt.Errorf("audit head: %w", err)
	}
	return db.key.signHead(tip.seq, tip.hash, db.now()), nil
}

// CheckpointPolicy says when Checkpoint signs a new head: once Events events
// were appended since the last checkpoint, or Interval passed with at least
// one. Zero fields never trigger.
type CheckpointPolicy struct {
	Events   int
	Interval time.Duration
}

// Checkpoint signs and records the head when policy says one is due. It
// first verifies what was appended since the last checkpoint (that
// checkpoint's signature and event, the events after it linked to it, their
// MACs), so
// a checkpoint never vouches for a tampered chain: a failure is a
// *ChainBrokenError. created is false when none was due, or another process
// recorded the same or a newer one first.
func (db *DB) Checkpoint(ctx context.Context, policy CheckpointPolicy) (head SignedHead, created bool, err error) {
	if db.key == nil {
		return SignedHead{}, false, errors.New("audit checkpoint: needs the audit key")
	}
	var tip chainTip
	due := false
	err = db.st.Read(ctx, func(tx *store.Tx) error {
		rec, err := readKeyRecord(ctx, tx)
		if err != nil {
			return err
		}
		fail := func(format string, args ...any) error {
			rep := VerifyReport{KeyID: db.key.id}
			rep.fail(0, format, args...)
			return &ChainBrokenError{Report: rep}
		}
		switch {
		case rec == nil:
			return fail("the database records no audit key: its key record was deleted")
		case rec.KeyID != db.key.id || !rec.valid(db.key.pub):
			return fail("the audit key record does not verify with key %s: it was replaced or altered", db.key.id)
		}
		last := SignedHead{Seq: rec.BoundarySeq, Hash: rec.BoundaryHash, At: rec.At}
		var lastAt int64
		err = tx.QueryRowContext(ctx, `SELECT seq, hash, at, key_id, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`).
			Scan(&last.Seq, &last.Hash, &lastAt, &last.KeyID, &last.Signature)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			// Every checkpoint row was deleted: start from the signed boundary.
		case err != nil:
			return fmt.Errorf("read last checkpoint: %w", err)
		default:
			last.At = time.Unix(0, lastAt).UTC()
			if err := last.Check(db.key.pub); err != nil || last.Seq < rec.BoundarySeq {
				return fail("the newest checkpoint (event %d) in the database is not valid (a forged row in audit_checkpoints): %v", last.Seq, err)
			}
		}
		var headSeq int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&headSeq); err != nil {
			return fmt.Errorf("read chain head: %w", err)
		}
		if headSeq < last.Seq {
			rep := VerifyReport{KeyID: db.key.id}
			rep.fail(headSeq+1, "events %d to %d are missing: the chain ends at event %d but the database's checkpoint is at event %d (the newest events were deleted)", headSeq+1, last.Seq, headSeq, last.Seq)
			return &ChainBrokenError{Report: rep}
		}
		n := headSeq - last.Seq
		due = (policy.Events > 0 && n >= int64(policy.Events)) ||
			(policy.Interval > 0 && n > 0 && !db.now().Before(last.At.Add(policy.Interval)))
		if !due {
			return nil
		}
		// Re-check the checkpoint's own event too: the scan starts just
		// before it and the checkpoint must match it.
		from, marks := chainTip{seq: last.Seq, hash: last.Hash}, []Anchor(nil)
		if last.Seq > 0 {
			var prev string
			if err := tx.QueryRowContext(ctx, `SELECT prev_hash FROM audit_events WHERE seq = ?`, last.Seq).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read checkpointed event: %w", err)
			}
			from = chainTip{seq: last.Seq - 1, hash: prev}
			marks = []Anchor{{Source: "the database's newest checkpoint", Head: last}}
		}
		rep, t, err := scanChain(ctx, tx, db.key, rec, from, marks, nil)
		if err != nil {
			return err
		}
		if !rep.OK {
			rep.KeyID = db.key.id
			return &ChainBrokenError{Report: rep}
		}
		tip = t
		return nil
	})
	if err != nil || !due {
		return SignedHead{}, false, wrapErr("audit checkpoint", err)
	}
	head = db.key.signHead(tip.seq, tip.hash, db.now())
	err = db.st.Write(ctx, func(tx *store.Tx) error {
		var newest int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), -1) FROM audit_checkpoints`).Scan(&newest); err != nil {
			return fmt.Errorf("read last checkpoint: %w", err)
		}
		if newest >= head.Seq {
			return nil // another process was first
		}
		created = true
		return insertCheckpoint(ctx, tx, head)
	})
	if err != nil {
		return SignedHead{}, false, fmt.Errorf("audit checkpoint: %w", err)
	}
	return head, created, nil
}

func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}

// AuditKeyID is the id of the audit key this handle appends with ("" when it
// has none and may only read a keyed chain).
func (db *DB) AuditKeyID() string {
	if db.key == nil {
		return ""
	}
	return db.key.id
}
