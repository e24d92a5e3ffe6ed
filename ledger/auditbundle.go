package ledger

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tollgatehq/tollgate/ledger/store"
)

// A bundle is a verified stretch of the chain that can be checked offline,
// with no database and no key file. It is JSON, one value per line:
//
//	{"header":{"format":"tollgate-audit-bundle","version":1,"key_id":…,"public_key":…,"exported_at":…}}
//	{"checkpoint":{…signed head…}}                 the database's checkpoints in range
//	{"event":{…event…,"signature":…}}             every event from from_seq to the head
//	{"end":{"from_seq":…,"events":…,"head":{…},"signature":…}}
//
// The exporter verifies the whole chain with the key first (MACs included),
// then signs each event's hash with the Ed25519 key: offline, the hashes are
// recomputed from the content and the signatures checked with the public
// key, so an edited, re-hashed, dropped or reordered event is named, and the
// signed end (first seq, head) shows a cut at either end.

const (
	bundleFormat  = "tollgate-audit-bundle"
	bundleVersion = 1
)

type bundleHeader struct {
	Format     string    `json:"format"`
	Version    int       `json:"version"`
	KeyID      string    `json:"key_id"`
	PublicKey  string    `json:"public_key"`
	ExportedAt time.Time `json:"exported_at"`
}

// bundleEvent is an event as a bundle carries it: without its MAC (which
// cannot be checked without the secret), with the exporter's signature.
type bundleEvent struct {
	Event
	Signature string `json:"signature"`
}

type bundleEnd struct {
	FromSeq   int64      `json:"from_seq"`
	Events    int64      `json:"events"`
	Head      SignedHead `json:"head"`
	Signature string     `json:"signature"`
}

type bundleLine struct {
	Header     *bundleHeader `json:"header,omitempty"`
	Checkpoint *SignedHead   `json:"checkpoint,omitempty"`
	Event      *bundleEvent  `json:"event,omitempty"`
	End        *bundleEnd    `json:"end,omitempty"`
}

func (l bundleLine) kinds() int {
	n := 0
	for _, set := range []bool{l.Header != nil, l.Checkpoint != nil, l.Event != nil, l.End != nil} {
		if set {
			n++
		}
	}
	return n
}

func bundleEndMessage(keyID string, fromSeq, events int64, head SignedHead) []byte {
	return []byte("tollgate audit bundle v1\n" + keyID + "\n" + strconv.FormatInt(fromSeq, 10) + "\n" + strconv.FormatInt(events, 10) + "\n" +
		strconv.FormatInt(head.Seq, 10) + "\n" + head.Hash + "\n")
}

// ExportBundle verifies the whole chain with the audit key and writes a
// bundle of the events from the first one at or after since (every event
// when since is zero) to the head, in one read snapshot. A chain that does
// not verify is a *ChainBrokenError and nothing is written.
func (db *DB) ExportBundle(ctx context.Context, w io.Writer, since time.Time) error {
	if db.key == nil {
		return errors.New("export audit bundle: signing a bundle needs the audit key")
	}
	err := db.st.Read(ctx, func(tx *store.Tx) error {
		rep, tip, err := db.verifyTx(ctx, tx, nil, nil)
		if err != nil {
			return err
		}
		if !rep.OK {
			return &ChainBrokenError{Report: rep}
		}
		from := tip.seq + 1
		if !since.IsZero() {
			var first sql.NullInt64
			if err := tx.QueryRowContext(ctx, `SELECT MIN(seq) FROM audit_events WHERE at >= ?`, since.UnixNano()).Scan(&first); err != nil {
				return fmt.Errorf("find the first event since %s: %w", since.Format(time.RFC3339), err)
			}
			if first.Valid {
				from = first.Int64
			}
		} else if tip.seq > 0 {
			from = 1
		}
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		// Data must reach the verifier byte for byte as it was hashed.
		enc.SetEscapeHTML(false)
		k := db.key
		if err := enc.Encode(bundleLine{Header: &bundleHeader{Format: bundleFormat, Version: bundleVersion, KeyID: k.id, PublicKey: k.PublicKeyText(), ExportedAt: db.now()}}); err != nil {
			return err
		}
		cps, err := readCheckpoints(ctx, tx, from-1)
		if err != nil {
			return err
		}
		for _, cp := range cps {
			if cp.Seq > tip.seq {
				break
			}
			if err := enc.Encode(bundleLine{Checkpoint: &cp}); err != nil {
				return err
			}
		}
		var n int64
		rows, err := tx.QueryContext(ctx, `SELECT `+eventColumns+` FROM audit_events WHERE seq >= ? AND seq <= ? ORDER BY seq`, from, tip.seq)
		if err != nil {
			return fmt.Errorf("read audit events: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanEvent(rows)
			if err != nil {
				return fmt.Errorf("read audit events: %w", err)
			}
			e.MAC = ""
			if err := enc.Encode(bundleLine{Event: &bundleEvent{Event: e, Signature: k.sign(signedMessage("event", k.id, e.Seq, e.Hash, time.Time{}))}}); err != nil {
				return err
			}
			n++
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read audit events: %w", err)
		}
		head := k.signHead(tip.seq, tip.hash, db.now())
		end := bundleEnd{FromSeq: from, Events: n, Head: head, Signature: k.sign(bundleEndMessage(k.id, from, n, head))}
		if err := enc.Encode(bundleLine{End: &end}); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("export audit bundle: %w", err)
	}
	return nil
}

// BundleReport is the result of checking a bundle offline.
type BundleReport struct {
	VerifyReport
	// FromSeq and HeadSeq are the first and last event the bundle covers.
	FromSeq int64 `json:"from_seq"`
	HeadSeq int64 `json:"head_seq"`
	// PublicKey signed the bundle. Pinned is true when it was checked against
	// a key the verifier trusts (its own key file or --public-key); an
	// unpinned bundle proves only that it is unchanged since whoever holds
	// that key signed it.
	PublicKey string `json:"public_key,omitempty"`
	Pinned    bool   `json:"pinned"`
}

// VerifyBundle checks a bundle with no database and no key file: the header's
// key (against pin when given), every checkpoint's signature, every event's
// hash, link and signature, and the signed end, which fixes the first event
// and the head so nothing can be cut from either end. It names the first bad
// event; an error is returned only when r cannot be read.
func VerifyBundle(r io.Reader, pin ed25519.PublicKey) (BundleReport, error) {
	var rep BundleReport
	src := &readErr{r: bufio.NewReader(r)}
	dec := json.NewDecoder(src)
	dec.DisallowUnknownFields()
	// next decodes one line: ok is false at the end of the input; err is a
	// malformed line, except a failure to read, which comes back with !ok.
	next := func() (l bundleLine, ok bool, err error) {
		err = dec.Decode(&l)
		switch {
		case errors.Is(err, io.EOF):
			return l, false, nil
		case src.err != nil && !errors.Is(src.err, io.EOF):
			return l, false, fmt.Errorf("read bundle: %w", src.err)
		case err != nil:
			return l, true, fmt.Errorf("not a valid bundle line: %v", err)
		case l.kinds() != 1:
			return l, true, errors.New("each line must hold exactly one of header, checkpoint, event or end")
		}
		return l, true, nil
	}
	fail := func(seq int64, format string, args ...any) (BundleReport, error) {
		rep.fail(seq, format, args...)
		rep.OK = false
		return rep, nil
	}

	l, ok, err := next()
	if err != nil && !ok {
		return rep, err
	}
	if err != nil || !ok || l.Header == nil {
		return fail(0, "the bundle does not start with its header (%v): not a tollgate audit bundle", orNothing(err))
	}
	h := l.Header
	if h.Format != bundleFormat || h.Version != bundleVersion {
		return fail(0, "the header says format %s version %d; this tollgate reads %s version %d", quoteInput(h.Format), h.Version, bundleFormat, bundleVersion)
	}
	pub, err := ParsePublicKey(h.PublicKey)
	if err != nil {
		return fail(0, "the header's %v", err)
	}
	rep.KeyID, rep.PublicKey = KeyIDOf(pub), h.PublicKey
	if h.KeyID != rep.KeyID {
		return fail(0, "the header's key_id %s is not the id of its public key (%s)", quoteInput(h.KeyID), rep.KeyID)
	}
	if pin != nil {
		if !pub.Equal(pin) {
			return fail(0, "the bundle is signed by key %s, not by the pinned key %s", rep.KeyID, KeyIDOf(pin))
		}
		rep.Pinned = true
	}

	var marks []Anchor
	var tip chainTip
	first := true
	for {
		l, ok, err := next()
		if err != nil && !ok {
			return rep, err
		}
		expect := tip.seq + 1
		if first {
			expect = 0
		}
		if err != nil {
			return fail(expect, "after event %d: %v", tip.seq, err)
		}
		if !ok {
			return fail(expect, "the bundle ends after event %d without its signed end: it was cut short", tip.seq)
		}
		switch {
		case l.Header != nil:
			return fail(expect, "a second header after event %d", tip.seq)
		case l.Checkpoint != nil:
			if !first {
				return fail(expect, "a checkpoint after the events began; checkpoints come first")
			}
			if err := l.Checkpoint.Check(pub); err != nil {
				return fail(0, "the checkpoint at event %d is not valid: %v", l.Checkpoint.Seq, err)
			}
			marks = append(marks, Anchor{Source: fmt.Sprintf("the bundle's checkpoint at event %d", l.Checkpoint.Seq), Head: *l.Checkpoint})
		case l.Event != nil:
			e := l.Event
			if first {
				// The link before the first event cannot be recomputed; its
				// signature vouches for it, and a checkpoint just before it
				// (when the database had one) pins it.
				tip = chainTip{seq: e.Seq - 1, hash: e.PrevHash}
				rep.FromSeq = e.Seq
				first = false
				if len(marks) > 0 && marks[0].Head.Seq < e.Seq-1 {
					return fail(e.Seq, "%s lies before the bundle's first event %d", marks[0].Source, e.Seq)
				}
			}
			switch {
			case e.Seq != tip.seq+1:
				return fail(tip.seq+1, "event %d is missing (the bundle jumps from %d to %d): deleted or renumbered", tip.seq+1, tip.seq, e.Seq)
			case e.PrevHash != tip.hash:
				return fail(e.Seq, "event %d does not link to event %d: its prev_hash differs from that event's hash (reordered, inserted or edited)", e.Seq, tip.seq)
			case chainHash(e.PrevHash, e.Seq, e.At.UTC(), e.Type, e.Actor, e.OperationID, e.Data) != e.Hash:
				return fail(e.Seq, "event %d does not match its hash: its content was edited", e.Seq)
			case !verifySignature(pub, signedMessage("event", rep.KeyID, e.Seq, e.Hash, time.Time{}), e.Signature):
				return fail(e.Seq, "event %d's signature does not verify with key %s: it was edited and re-hashed, or forged", e.Seq, rep.KeyID)
			}
			for len(marks) > 0 && marks[0].Head.Seq <= e.Seq {
				m := marks[0]
				if (m.Head.Seq == e.Seq && m.Head.Hash != e.Hash) || (m.Head.Seq == e.Seq-1 && m.Head.Hash != e.PrevHash) {
					return fail(m.Head.Seq, "event %d differs from %s", m.Head.Seq, m.Source)
				}
				rep.Heads++
				marks = marks[1:]
			}
			rep.Checked++
			tip = chainTip{seq: e.Seq, hash: e.Hash}
		case l.End != nil:
			end := l.End
			if first {
				tip = chainTip{seq: end.FromSeq - 1, hash: end.Head.Hash}
				rep.FromSeq = end.FromSeq
			}
			if err := end.Head.Check(pub); err != nil {
				return fail(0, "the bundle's head is not valid: %v", err)
			}
			switch {
			case !verifySignature(pub, bundleEndMessage(rep.KeyID, end.FromSeq, end.Events, end.Head), end.Signature):
				return fail(0, "the bundle's end signature does not verify with key %s: its range was altered", rep.KeyID)
			case end.FromSeq < rep.FromSeq:
				return fail(end.FromSeq, "events %d to %d are missing from the start of the bundle (it was signed from event %d)", end.FromSeq, rep.FromSeq-1, end.FromSeq)
			case end.FromSeq > rep.FromSeq:
				return fail(rep.FromSeq, "the bundle starts at event %d but was signed from event %d: events were added before it", rep.FromSeq, end.FromSeq)
			case end.Head.Seq > tip.seq:
				return fail(tip.seq+1, "events %d to %d are missing: the bundle ends at event %d but its signed head is event %d (the newest events were removed)", tip.seq+1, end.Head.Seq, tip.seq, end.Head.Seq)
			case end.Head.Seq != tip.seq || end.Head.Hash != tip.hash || end.Events != rep.Checked:
				return fail(end.Head.Seq, "the bundle's events do not end at its signed head (event %d, %d events)", end.Head.Seq, end.Events)
			}
			for _, m := range marks {
				if m.Head.Seq != tip.seq || m.Head.Hash != tip.hash {
					return fail(m.Head.Seq, "%s does not match the bundle's head %d", m.Source, end.Head.Seq)
				}
				rep.Heads++
			}
			rep.HeadSeq = end.Head.Seq
			if _, more, _ := next(); more {
				return fail(0, "data after the bundle's signed end")
			}
			rep.OK = true
			return rep, nil
		}
	}
}

// readErr remembers the first read error, so a failed read is told apart
// from a malformed bundle.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

func orNothing(err error) string {
	if err == nil {
		return "nothing else"
	}
	return err.Error()
}

// ReadHeads reads signed heads saved by `tollgate audit head --json` or
// written to a checkpoint file: one or more JSON objects, one after another.
// It checks their shape, not their signature (Verify does, with the key).
func ReadHeads(r io.Reader) ([]SignedHead, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var out []SignedHead
	for i := 1; ; i++ {
		var h SignedHead
		err := dec.Decode(&h)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("head %d: %w; want objects like {\"seq\":…,\"hash\":…,\"at\":…,\"key_id\":…,\"signature\":…} as `tollgate audit head --json` prints", i, err)
		}
		if err := h.wellFormed(); err != nil {
			return nil, fmt.Errorf("head %d: %w", i, err)
		}
		out = append(out, h)
	}
	if len(out) == 0 {
		return nil, errors.New("no signed head in it; save one with `tollgate audit head --json > FILE`")
	}
	return out, nil
}
