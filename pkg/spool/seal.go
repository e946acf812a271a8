package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The seal: an extended attribute on a committed object's file saying
// which object it holds, how long it is and its CRC-32C. See slots.go.
const (
	sealAttr  = "user.dicomgw.seal"
	sealMagic = "dicomgw-seal-v1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// idPattern is what newID makes; a seal naming anything else is not ours.
var idPattern = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{8}$`)

// sealsSupported tries an extended attribute and a hard link in dir.
func sealsSupported(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	defer os.Remove(name)
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), sealAttr, []byte("probe"), 0); err != nil {
		return fmt.Errorf("extended attributes: %w", err)
	}
	if err := os.Link(name, name+".link"); err != nil {
		return fmt.Errorf("hard links: %w", err)
	}
	return os.Remove(name + ".link")
}

// seal is the value of the seal attribute.
func seal(id string, size int64, crc uint32) []byte {
	return fmt.Appendf(nil, "%s %s %d %08x", sealMagic, id, size, crc)
}

// sealInfo is what a seal says: the object's ID, the file's size and the
// CRC-32C of its bytes.
type sealInfo struct {
	id   string
	size int64
	crc  uint32
}

// errBadSeal is wrapped when a file carries a seal attribute that is not
// a seal of ours (garbled).
var errBadSeal = errors.New("a seal that cannot be read")

// sealOf reads f's seal without checking it against the content. ok is
// false when f has none (a partial object, an empty slot, a file
// committed the simple way); an error wrapping errBadSeal means it has one
// that cannot be read.
func sealOf(f *os.File) (sealInfo, bool, error) {
	buf := make([]byte, 128)
	n, err := unix.Fgetxattr(int(f.Fd()), sealAttr, buf)
	if err != nil {
		if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
			return sealInfo{}, false, nil
		}
		if errors.Is(err, unix.ERANGE) {
			return sealInfo{}, false, fmt.Errorf("%w: longer than %d bytes", errBadSeal, len(buf))
		}
		return sealInfo{}, false, err
	}
	fields := strings.Fields(string(buf[:n]))
	if len(fields) != 4 || fields[0] != sealMagic || !idPattern.MatchString(fields[1]) {
		return sealInfo{}, false, fmt.Errorf("%w: %q", errBadSeal, buf[:n])
	}
	size, err1 := strconv.ParseInt(fields[2], 10, 64)
	crc, err2 := strconv.ParseUint(fields[3], 16, 32)
	if err1 != nil || err2 != nil || size < 0 {
		return sealInfo{}, false, fmt.Errorf("%w: %q", errBadSeal, buf[:n])
	}
	return sealInfo{id: fields[1], size: size, crc: uint32(crc)}, true, nil
}

// readSeal returns the ID of the object sealed in f when its seal is
// present and its size and CRC match the content; ok is false otherwise
// (no seal: a partial object or an empty slot).
func readSeal(f *os.File) (id string, ok bool, err error) {
	si, ok, err := sealOf(f)
	if errors.Is(err, errBadSeal) {
		return "", false, nil
	}
	if err != nil || !ok {
		return "", false, err
	}
	fi, err := f.Stat()
	if err != nil {
		return "", false, err
	}
	// A size other than the sealed one fails, longer as well as shorter,
	// even when the sealed bytes' CRC checks out: shorter, the data did
	// not all reach the disk (the fsync after the seal was cut short, so
	// the object was never acknowledged); longer, something wrote to the
	// file after it was sealed, and it is no longer what was sealed.
	// Recovery removes either, as any slot whose seal does not check out.
	if fi.Size() != si.size {
		return "", false, nil
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, si.size)); err != nil {
		return "", false, err
	}
	if h.Sum32() != si.crc {
		return "", false, nil
	}
	return si.id, true, nil
}
