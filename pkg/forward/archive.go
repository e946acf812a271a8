package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dicomgw/dicomgw/internal/durable"
	"github.com/dicomgw/dicomgw/pkg/part10"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// Archive is the destination used when no DICOMweb endpoint is configured:
// a directory laid out <study>/<series>/<sop>.dcm, each name made from the
// object's UID by archiveName:
//
//   - a UID of digits and dots without empty components (uid.Valid; leading
//     zeros included) is its own name, as it always was;
//   - a UID the lenient policy accepted (hexadecimal, '-', '_', empty
//     components, a leading or trailing dot: 1 to 64 bytes of
//     [0-9A-Za-z._-]) is named "_uid-" and the UID: never ".", "..", hidden
//     or option-like, never a valid UID's name;
//   - a missing Study or Series Instance UID is "_no-study-uid" or
//     "_no-series-uid": a leading '_' is in no UID;
//   - a different object with the SOP Instance UID of one already archived
//     is kept beside it as <sop>+dup-<spool ID>.dcm ('+' is in no UID name,
//     and the spool ID is the gateway's).
//
// Any other UID (a slash, a space, a control character, more than 64
// bytes: refused when received, under either policy) names nothing: such
// an object goes to the dead letters.
//
// Each file is written by the archive: a fresh file meta header, as a
// STOW-RS part has (our implementation, the calling AE as source; not the
// spool's private receive record, which holds the peer's address), then
// the data set copied from the spool through Object.Open, which checks it:
// a damaged copy is never archived.
type Archive struct {
	Dir string
	// ImplementationClassUID and ImplementationVersionName go into the
	// file meta information of each archived file.
	ImplementationClassUID    string
	ImplementationVersionName string
}

func (a *Archive) String() string { return "archive:" + a.Dir }

// Prepare makes the archive directory, parents included, durably, so that
// a gateway that cannot file anything says so at start-up rather than
// retrying every object for days.
func (a *Archive) Prepare() error {
	if err := os.MkdirAll(a.Dir, 0o750); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	for d := a.Dir; ; d = filepath.Dir(d) {
		if err := durable.SyncDir(d); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		if p := filepath.Dir(d); p == d || d == "." {
			return nil
		}
	}
}

// Deliver files each object durably: written to a temporary name, fsynced
// and given its name (never replacing another file); then the directories
// are fsynced. An object already archived with identical content counts as
// delivered; a different object under the same SOP Instance UID is not
// overwritten but filed beside it under a duplicate's name, for an
// operator to decide (Result.Filed says so).
//
// The directories that got new entries are fsynced once per batch, after
// the links: an object is Delivered only once its entry is durable.
func (a *Archive) Deliver(ctx context.Context, objs []*Object) []Result {
	out := make([]Result, len(objs))
	needs := make([][]string, len(objs)) // the directories each object's durability needs
	var order []string
	synced := map[string]error{}
	for i, o := range objs {
		if ctx.Err() != nil {
			out[i] = Result{Outcome: Abandoned, Reason: "shutting down"}
			continue
		}
		out[i], needs[i] = a.deliver(o)
		for _, d := range needs[i] {
			if _, ok := synced[d]; !ok {
				synced[d] = nil
				order = append(order, d)
			}
		}
	}
	for _, d := range order {
		synced[d] = durable.SyncDir(d)
	}
	for i := range objs {
		for _, d := range needs[i] {
			if err := synced[d]; err != nil {
				out[i] = Result{Outcome: Retry, Reason: fmt.Sprintf("archive: %v", err)}
				break
			}
		}
	}
	return out
}

// Names of the archive for what is not named by a conforming UID.
const (
	lenientPrefix = "_uid-"          // + a UID the lenient policy accepted
	noStudy       = "_no-study-uid"  // objects without a Study Instance UID
	noSeries      = "_no-series-uid" // objects without a Series Instance UID
	dupInfix      = "+dup-"          // <sop>+dup-<spool ID>.dcm
)

// archiveName is the file name for a UID of the object: the UID itself when
// it is digits and dots without empty components, lenientPrefix and the UID
// when it is 1 to 64 bytes of [0-9A-Za-z._-] (what uid.Lenient tolerates),
// placeholder when it is missing; any other UID is an error. The names of
// the three kinds never meet: only the first starts with a digit, and the
// prefix and the placeholders differ from their second byte.
func archiveName(what uid.Attribute, v, placeholder string) (string, error) {
	switch {
	case v == "" && placeholder != "":
		return placeholder, nil
	case uid.Valid(v) == nil:
		return v, nil
	}
	if p := uid.Check(v); !p.Tolerable() {
		return "", fmt.Errorf("%v %.64q %v", what, v, p)
	}
	return lenientPrefix + v, nil
}

// spoolIDName reports whether a spool ID is fit to be part of a file name
// (the spool makes them of hexadecimal digits and '-'; this only guards
// against a file put into the queue by hand).
func spoolIDName(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

// deliver files one object and returns the directories whose new entries
// must be fsynced before it counts as delivered.
func (a *Archive) deliver(o *Object) (Result, []string) {
	var filed Filing
	if o.StudyInstanceUID == "" {
		filed |= FiledNoStudy
	}
	if o.SeriesInstanceUID == "" {
		filed |= FiledNoSeries
	}
	var names [3]string
	for i, u := range []struct {
		what        uid.Attribute
		v           string
		placeholder string
	}{
		{uid.StudyInstanceUID, o.StudyInstanceUID, noStudy},
		{uid.SeriesInstanceUID, o.SeriesInstanceUID, noSeries},
		{uid.SOPInstanceUID, o.SOPInstanceUID, ""},
	} {
		n, err := archiveName(u.what, u.v, u.placeholder)
		if err != nil {
			return Result{Outcome: Dead, Reason: fmt.Sprintf("cannot file in the archive: %v", err)}, nil
		}
		names[i] = n
	}
	study := filepath.Join(a.Dir, names[0])
	series := filepath.Join(study, names[1])
	dst := filepath.Join(series, names[2]+".dcm")
	if same, err := sameDataSet(o, dst); errors.Is(err, ErrDamaged) {
		return Result{Outcome: Dead, Damaged: true, Reason: err.Error()}, nil
	} else if err == nil {
		if same {
			// Filed before (a retry after a crash, or a resend): its
			// entry may not have been fsynced yet.
			return a.delivered(dst, filed), []string{series}
		}
		// Another object holds the name: keep this one beside it.
		filed |= FiledDuplicate
		dst, same, err = a.duplicate(o, series, names[2])
		switch {
		case errors.Is(err, ErrDamaged):
			return Result{Outcome: Dead, Damaged: true, Reason: err.Error()}, nil
		case errors.Is(err, errNoDuplicateName):
			return Result{Outcome: Dead, Reason: fmt.Sprintf("the archive already holds a different object with SOP Instance UID %q: %v", o.SOPInstanceUID, err)}, nil
		case err != nil:
			return Result{Outcome: Retry, Reason: fmt.Sprintf("archive: %v", err)}, nil
		case same:
			return a.delivered(dst, filed), []string{series}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Result{Outcome: Retry, Reason: fmt.Sprintf("archive: %v", err)}, nil
	}
	created, err := mkdirs(a.Dir, study, series)
	if err != nil {
		return Result{Outcome: Retry, Reason: fmt.Sprintf("archive: %v", err)}, nil
	}
	if err := a.write(o, dst); errors.Is(err, ErrDamaged) {
		return Result{Outcome: Dead, Damaged: true, Reason: err.Error()}, nil
	} else if err != nil {
		return Result{Outcome: Retry, Reason: fmt.Sprintf("archive: %v", err)}, nil
	}
	// The new entry, and every directory created for it, must be durable
	// before the spool lets go of the object.
	return a.delivered(dst, filed), append([]string{series}, created...)
}

// errNoDuplicateName is wrapped when a duplicate cannot be given its name:
// retrying would not mend it.
var errNoDuplicateName = errors.New("no name to keep it under")

// duplicate finds where to keep o, whose SOP Instance UID names a different
// archived object: a duplicate already filed with the same data set (same
// is true: a resend, or a retry after a crash), else <sop>+dup-<o.ID>.dcm,
// to be created.
func (a *Archive) duplicate(o *Object, series, sop string) (dst string, same bool, err error) {
	des, err := os.ReadDir(series)
	if err != nil {
		return "", false, err
	}
	for _, de := range des {
		n := de.Name()
		if !strings.HasPrefix(n, sop+dupInfix) || !strings.HasSuffix(n, ".dcm") || !de.Type().IsRegular() {
			continue
		}
		p := filepath.Join(series, n)
		if same, err := sameDataSet(o, p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", false, err
		} else if same {
			return p, true, nil
		}
	}
	if !spoolIDName(o.ID) {
		return "", false, fmt.Errorf("%w: spool ID %.64q", errNoDuplicateName, o.ID)
	}
	dst = filepath.Join(series, sop+dupInfix+o.ID+".dcm")
	if _, err := os.Lstat(dst); err == nil {
		// A regular file there was compared above, and differs.
		return "", false, fmt.Errorf("%w: %s holds something else", errNoDuplicateName, dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	return dst, false, nil
}

// delivered is the result of filing an object at dst.
func (a *Archive) delivered(dst string, filed Filing) Result {
	rel, err := filepath.Rel(a.Dir, dst)
	if err != nil {
		rel = dst
	}
	return Result{Outcome: Delivered, Location: rel, Filed: filed}
}

// mkdirs creates study and series under root as needed and returns the
// parents whose entries changed (to be fsynced).
func mkdirs(root, study, series string) ([]string, error) {
	var changed []string
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		// Gone since start-up (Prepare made it): make it again, parents too.
		if err := os.MkdirAll(root, 0o750); err != nil {
			return nil, err
		}
		changed = append(changed, filepath.Dir(root))
	}
	for _, d := range []struct{ dir, parent string }{{study, root}, {series, study}} {
		err := os.Mkdir(d.dir, 0o750)
		switch {
		case err == nil:
			changed = append(changed, d.parent)
		case errors.Is(err, fs.ErrExist):
		default:
			return nil, err
		}
	}
	return changed, nil
}

// write writes o into a temporary file beside dst — its file meta header,
// then its data set from the spool — fsyncs it and gives it the name dst,
// never replacing a file that is there (two objects with one SOP Instance
// UID filed at once by two workers: the second attempt compares them).
func (a *Archive) write(o *Object, dst string) error {
	in, err := o.Open()
	if err != nil {
		return err
	}
	defer in.Close()
	// A name of its own: two objects with the same SOP Instance UID, filed
	// at once by two workers, must not write into one temporary file.
	out, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".*.part")
	if err != nil {
		return err
	}
	tmp := out.Name()
	head := part10.AppendMeta(nil, &part10.Meta{
		SOPClassUID: o.SOPClassUID, SOPInstanceUID: o.SOPInstanceUID, TransferSyntaxUID: o.TransferSyntaxUID,
		ImplementationClassUID: a.ImplementationClassUID, ImplementationVersionName: a.ImplementationVersionName,
		SourceAE: o.CallingAE,
	})
	if err = out.Chmod(0o640); err == nil {
		_, err = out.Write(head)
	}
	var n int64
	if err == nil {
		n, err = io.Copy(out, in)
	}
	if err == nil && n != o.DataSize {
		err = fmt.Errorf("%w: the data set has %d bytes, %d recorded", ErrDamaged, n, o.DataSize)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = placeNew(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// placeNew gives the file tmp the name dst, failing if dst exists: a hard
// link does that atomically; where the file system has none, a rename
// after a check (a file appearing between the two is the only race, and
// only between two workers filing one SOP Instance UID).
func placeNew(tmp, dst string) error {
	err := os.Link(tmp, dst)
	if err == nil {
		return os.Remove(tmp)
	}
	if errors.Is(err, fs.ErrExist) || !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EXDEV) && !errors.Is(err, syscall.EMLINK) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	if _, serr := os.Lstat(dst); serr == nil {
		return fmt.Errorf("%s appeared while writing: %w", dst, fs.ErrExist)
	}
	return os.Rename(tmp, dst)
}

// sameDataSet reports whether the Part 10 file at path holds the same data
// set as o (the file meta information may differ: an earlier version
// linked the spool's file). An error wrapping fs.ErrNotExist means there
// is no file at path; one wrapping ErrDamaged, that o's copy in the spool
// is damaged.
func sameDataSet(o *Object, path string) (bool, error) {
	fb, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	sb, err := fb.Stat()
	if err != nil {
		return false, err
	}
	off, err := dataSetOffset(fb)
	if err != nil {
		return false, nil // not a Part 10 file we can read: not the same
	}
	if sb.Size()-off != o.DataSize {
		return false, nil
	}
	fa, err := o.Open()
	if err != nil {
		return false, err
	}
	defer fa.Close()
	return sameBytes(fa, io.NewSectionReader(fb, off, sb.Size()-off))
}

// dataSetOffset finds where a Part 10 file's data set begins.
func dataSetOffset(r io.ReaderAt) (int64, error) {
	g, err := part10.ReadGroup(r)
	return g.DataOffset, err
}

// sameBytes compares two streams of the same length; a (the spool's copy)
// is read to its end, so that its check runs.
func sameBytes(a, b io.Reader) (bool, error) {
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		if ea != nil && ea != io.EOF && ea != io.ErrUnexpectedEOF {
			return false, ea
		}
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if ea == io.EOF || ea == io.ErrUnexpectedEOF {
			return eb == io.EOF || eb == io.ErrUnexpectedEOF, nil
		}
		if ea != nil {
			return false, ea
		}
		if eb != nil {
			return false, eb
		}
	}
}
