package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// applicationID marks the file as a dicomgw ledger (PRAGMA application_id):
// "dgLg".
const applicationID = 0x64674c67

// migrations[v] takes the schema from version v to v+1; PRAGMA user_version
// holds the version. Times are Unix nanoseconds; NULL where there is none.
var migrations = []string{
	// 1: objects and their deliveries.
	`CREATE TABLE objects (
		id               TEXT PRIMARY KEY,
		sop_instance_uid TEXT NOT NULL DEFAULT '',
		sop_class_uid    TEXT NOT NULL DEFAULT '',
		study_uid        TEXT NOT NULL DEFAULT '',
		series_uid       TEXT NOT NULL DEFAULT '',
		transfer_syntax  TEXT NOT NULL DEFAULT '',
		calling_ae       TEXT NOT NULL DEFAULT '',
		called_ae        TEXT NOT NULL DEFAULT '',
		peer             TEXT NOT NULL DEFAULT '',
		received_at      INTEGER NOT NULL,
		size             INTEGER NOT NULL DEFAULT 0,
		gone_at          INTEGER,
		complete         INTEGER NOT NULL DEFAULT 1 -- 0: made by a later event, receipt not recorded
	);
	CREATE INDEX objects_study    ON objects(study_uid, received_at);
	CREATE INDEX objects_sop      ON objects(sop_instance_uid, received_at);
	CREATE INDEX objects_calling  ON objects(calling_ae, received_at);
	CREATE INDEX objects_received ON objects(received_at);
	CREATE INDEX objects_gone     ON objects(gone_at) WHERE gone_at IS NOT NULL;
	-- The objects whose files are in the spool, for InSpool: partial, so it
	-- stays as small as the spool.
	CREATE INDEX objects_here     ON objects(id) WHERE gone_at IS NULL;

	CREATE TABLE deliveries (
		object_id     TEXT NOT NULL,
		destination   TEXT NOT NULL,
		state         TEXT NOT NULL,
		received_at   INTEGER NOT NULL, -- the object's, so that Pending needs no join
		attempts      INTEGER NOT NULL DEFAULT 0,
		first_failure INTEGER,
		next_attempt  INTEGER,
		last_error    TEXT NOT NULL DEFAULT '',
		unconfirmed   INTEGER NOT NULL DEFAULT 0,
		delay_ns      INTEGER NOT NULL DEFAULT 0,
		delivered_at  INTEGER,
		dead_at       INTEGER,
		dead_reason   TEXT NOT NULL DEFAULT '',
		updated_at    INTEGER NOT NULL,
		PRIMARY KEY (object_id, destination)
	) WITHOUT ROWID;
	-- Pending: the primary key's columns ride along, so the index covers it.
	CREATE INDEX deliveries_queue ON deliveries(destination, state, received_at);
	-- Dead letters, by destination and of any: partial, so only dead rows
	-- cost an index write.
	CREATE INDEX deliveries_dead     ON deliveries(destination, dead_at) WHERE state = 'dead';
	CREATE INDEX deliveries_dead_any ON deliveries(dead_at) WHERE state = 'dead';`,

	// 2: storage commitment requests. refs and results are JSON arrays.
	`CREATE TABLE commitments (
		calling_ae      TEXT NOT NULL,
		transaction_uid TEXT NOT NULL,
		called_ae       TEXT NOT NULL DEFAULT '',
		peer            TEXT NOT NULL DEFAULT '',
		mode            TEXT NOT NULL,
		refs            TEXT NOT NULL,
		requested_at    INTEGER NOT NULL,
		deadline        INTEGER NOT NULL,
		state           TEXT NOT NULL,
		results         TEXT NOT NULL DEFAULT '',
		decided_at      INTEGER,
		attempts        INTEGER NOT NULL DEFAULT 0,
		next_attempt    INTEGER,
		last_error      TEXT NOT NULL DEFAULT '',
		reported_at     INTEGER,
		via             TEXT NOT NULL DEFAULT '',
		updated_at      INTEGER NOT NULL,
		PRIMARY KEY (calling_ae, transaction_uid)
	) WITHOUT ROWID;
	CREATE INDEX commitments_open ON commitments(requested_at) WHERE state IN ('waiting', 'reporting');
	CREATE INDEX commitments_requested ON commitments(requested_at);
	CREATE INDEX commitments_done ON commitments(updated_at) WHERE state IN ('reported', 'abandoned');`,

	// 3: what a delivered copy was, when not the original (a stamped copy:
	// which attributes were set to what).
	`ALTER TABLE deliveries ADD COLUMN copy TEXT NOT NULL DEFAULT '';`,
}

// SchemaVersion is the schema this package reads and writes.
var SchemaVersion = len(migrations)

// dsn is the driver's name for the database at path: an SQLite URI (so that
// a path with '?', '#' or '%' stays a path) with the given parameters.
func dsn(path string, params url.Values) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return "file:" + (&url.URL{Path: abs}).EscapedPath() + "?" + params.Encode(), nil
}

func pragmas(busy time.Duration, extra ...string) url.Values {
	v := url.Values{}
	v.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	for _, p := range extra {
		v.Add("_pragma", p)
	}
	return v
}

// sqliteCode is the primary SQLite result code of err, 0 if err is not an
// SQLite error.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// damaged tells whether err says the file is not a database or is corrupt.
func damaged(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_NOTADB || c == sqlite3.SQLITE_CORRUPT
}

// transient tells whether a failed write may succeed when tried again (the
// disk fills, the file is locked, an I/O error), as opposed to an operation
// that will fail however often it is tried (a value SQLite refuses).
func transient(err error) bool {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_RANGE:
		return false
	}
	return true
}

// fileError names the file in an error from opening or checking it.
func fileError(path string, err error) error {
	if damaged(err) {
		return fmt.Errorf("ledger %s: %w: %v", path, ErrDamaged, err)
	}
	return fmt.Errorf("ledger %s: %w", path, err)
}

// quickCheck runs PRAGMA quick_check: a damaged file is refused at Open rather
// than failing writes one by one later.
func quickCheck(ctx context.Context, db *sql.DB, path string) error {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check(10)")
	if err != nil {
		return fileError(path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fileError(path, err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Err(); err != nil {
		return fileError(path, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("ledger %s: %w: quick_check: %s", path, ErrDamaged, strings.Join(problems, "; "))
	}
	return nil
}

// header reads the schema version and application ID and tells whether the
// database has any table.
func header(ctx context.Context, db *sql.DB) (version, appID int, empty bool, err error) {
	if err = db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return
	}
	if err = db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return
	}
	var n int
	err = db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n)
	return version, appID, n == 0, err
}

// checkHeader refuses a database that is not a ledger of a schema this
// package knows; migrate says whether an older (or empty) one is acceptable.
func checkHeader(ctx context.Context, db *sql.DB, path string, migrate bool) (version int, err error) {
	version, appID, empty, err := header(ctx, db)
	if err != nil {
		return 0, fileError(path, err)
	}
	switch {
	case appID != applicationID && !(appID == 0 && empty):
		return 0, fmt.Errorf("ledger %s: %w (application_id %#x)", path, ErrNotLedger, appID)
	case version > SchemaVersion:
		return 0, fmt.Errorf("ledger %s: %w: version %d, this dicomgw knows up to %d", path, ErrNewerSchema, version, SchemaVersion)
	case version < SchemaVersion && !migrate:
		return 0, fmt.Errorf("ledger %s: %w: version %d, this dicomgw reads %d; the daemon migrates it when it starts", path, ErrOlderSchema, version, SchemaVersion)
	}
	return version, nil
}

// migrateSchema brings the schema to SchemaVersion, one version per
// transaction.
func migrateSchema(ctx context.Context, db *sql.DB, path string, from int) error {
	for v := from; v < SchemaVersion; v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fileError(path, err)
		}
		_, err = tx.ExecContext(ctx, migrations[v])
		if err == nil {
			// PRAGMA arguments cannot be parameters; these are our constants.
			_, err = tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d; PRAGMA user_version = %d", applicationID, v+1))
		}
		if err == nil {
			err = tx.Commit()
		} else {
			_ = tx.Rollback()
		}
		if err != nil {
			return fmt.Errorf("ledger %s: migrating to schema %d: %w", path, v+1, err)
		}
	}
	return nil
}

// openExisting opens the database at path for a command run beside the
// daemon: it never creates the file.
func openExisting(path string, params url.Values) (*sql.DB, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ledger %s: %w (the daemon creates it when it starts): %w", path, ErrNoLedger, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("ledger %s: not a regular file", path)
	}
	d, err := dsn(path, params)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", d)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := checkHeader(ctx, db, path, false); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}
