package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tollgatehq/tollgate/ledger"
)

// checkpointer signs the audit chain's head every Audit.CheckpointEvents
// events or CheckpointInterval, verifying what was appended since the last
// checkpoint first, and sends each one away from the database: the
// checkpoint file and the approvals Slack channel. A saved head is what makes
// a deleted tail or a re-keyed copy of the database visible to `tollgate
// audit verify`. A chain that does not verify is alerted once per distinct
// failure, never signed.
type checkpointer struct {
	db     *ledger.DB
	policy ledger.CheckpointPolicy
	file   string
	alert  func(ctx context.Context, text string)
	log    *slog.Logger

	mu         sync.Mutex
	lastFailed string // the last failure alerted, so a broken chain is not alerted every tick
}

// enabled reports whether there is anything to do: a keyed chain and a policy.
func (c *checkpointer) enabled() bool {
	return c.db.AuditKeyID() != "" && (c.policy.Events > 0 || c.policy.Interval > 0)
}

func (c *checkpointer) loop(ctx context.Context, every time.Duration) {
	if !c.enabled() {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.run(ctx)
	}
}

// run makes a checkpoint when one is due and delivers it. It reports whether
// one was made (for tests).
func (c *checkpointer) run(ctx context.Context) bool {
	h, created, err := c.db.Checkpoint(ctx, c.policy)
	var broken *ledger.ChainBrokenError
	switch {
	case errors.As(err, &broken):
		c.failed(ctx, err.Error(), fmt.Sprintf(":rotating_light: The audit chain does not verify: %s. Nothing was signed; run `tollgate audit verify` and compare it with a saved head.", broken.Error()))
		return false
	case err != nil:
		c.log.Warn("audit checkpoint failed", "err", err)
		return false
	case !created:
		return false
	}
	c.log.Info("audit checkpoint signed", "seq", h.Seq, "hash", h.Hash, "key_id", h.KeyID)
	if c.file != "" {
		if err := appendCheckpoint(c.file, h); err != nil {
			c.failed(ctx, err.Error(), fmt.Sprintf(":warning: Audit checkpoint %d was signed but could not be written to the checkpoint file: %v", h.Seq, err))
		}
	}
	c.alert(ctx, fmt.Sprintf(":lock: Audit checkpoint: event %d, hash %s…, key %s. Keep this message: `tollgate audit verify` can check the database against it.", h.Seq, h.Hash[:16], h.KeyID))
	return true
}

func (c *checkpointer) failed(ctx context.Context, key, text string) {
	c.log.Error("audit checkpoint refused", "err", key)
	c.mu.Lock()
	repeat := c.lastFailed == key
	c.lastFailed = key
	c.mu.Unlock()
	if !repeat {
		c.alert(ctx, text)
	}
}

// appendCheckpoint appends h as one JSON line to the checkpoint file,
// creating it 0600 (and its folder 0700). Only a regular file is written.
func appendCheckpoint(path string, h ledger.SignedHead) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("checkpoint file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("checkpoint file %s is not a regular file", path)
	}
	line, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	return nil
}
