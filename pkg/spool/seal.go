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
//
// Version 2 gives the CRC of the file meta information (the head, whose
// record the commit rewrites with the object's destinations) and that of
// the data set apart: the data set's is summed as it arrives, the head's
// at the commit, and a reader of the data set checks it without reading
// the head again. Version 1 (one CRC of the whole file) is still read.
const (
	sealAttr    = "user.dicomgw.seal"
	sealMagicV1 = "dicomgw-seal-v1"
	sealMagic   = "dicomgw-seal-v2"
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

// seal is the value of the seal attribute: the object's ID, the file's
// size, the head's length and the CRC-32C of the head and of the data set.
func seal(id string, size, headLen int64, headCRC, dataCRC uint32) []byte {
	return fmt.Appendf(nil, "%s %s %d %d %08x %08x", sealMagic, id, size, headLen, headCRC, dataCRC)
}

// sealV1 is a seal of the first version (one CRC of the whole file), as
// objects of earlier versions carry.
func sealV1(id string, size int64, crc uint32) []byte {
	return fmt.Appendf(nil, "%s %s %d %08x", sealMagicV1, id, size, crc)
}

// sealInfo is what a seal says: the object's ID, the file's size, and
// the CRC-32C of its bytes: of the head (headLen bytes) and the data set
// apart, or (version 1, headLen 0) of the whole file in crc.
type sealInfo struct {
	id      string
	size    int64
	headLen int64
	headCRC uint32
	dataCRC uint32
	crc     uint32 // version 1
}

// errBadSeal is wrapped when a file carries a seal attribute that is not
// a seal of ours (garbled).
var errBadSeal = errors.New("a seal that cannot be read")

// sealOf reads f's seal without checking it against the content. ok is
// false when f has none (a partial object, an empty slot, a file
// committed the simple way); an error wrapping errBadSeal means it has one
// that cannot be read.
func sealOf(f *os.File) (sealInfo, bool, error) {
	buf := make([]byte, 160)
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
	bad := fmt.Errorf("%w: %q", errBadSeal, buf[:n])
	fields := strings.Fields(string(buf[:n]))
	if len(fields) < 4 || !idPattern.MatchString(fields[1]) {
		return sealInfo{}, false, bad
	}
	si := sealInfo{id: fields[1]}
	num := func(s string, base, bits int) uint64 {
		v, e := strconv.ParseUint(s, base, bits)
		if e != nil {
			err = bad
		}
		return v
	}
	size := num(fields[2], 10, 63)
	si.size = int64(size)
	switch {
	case fields[0] == sealMagicV1 && len(fields) == 4:
		si.crc = uint32(num(fields[3], 16, 32))
	case fields[0] == sealMagic && len(fields) == 6:
		si.headLen = int64(num(fields[3], 10, 63))
		si.headCRC = uint32(num(fields[4], 16, 32))
		si.dataCRC = uint32(num(fields[5], 16, 32))
		if err == nil && (si.headLen == 0 || si.headLen > si.size) {
			err = bad
		}
	default:
		return sealInfo{}, false, bad
	}
	if err != nil {
		return sealInfo{}, false, err
	}
	return si, true, nil
}

// check reads f and says whether its content is what the seal says.
func (si sealInfo) check(f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	// A size other than the sealed one fails, longer as well as shorter,
	// even when the sealed bytes' CRC checks out: shorter, the data did
	// not all reach the disk (the fsync after the seal was cut short, so
	// the object was never acknowledged); longer, something wrote to the
	// file after it was sealed, and it is no longer what was sealed.
	// Recovery removes either, as any slot whose seal does not check out.
	if fi.Size() != si.size {
		return false, nil
	}
	sum := func(off, n int64) (uint32, error) {
		h := crc32.New(castagnoli)
		_, err := io.Copy(h, io.NewSectionReader(f, off, n))
		return h.Sum32(), err
	}
	if si.headLen == 0 {
		c, err := sum(0, si.size)
		return err == nil && c == si.crc, err
	}
	hc, err := sum(0, si.headLen)
	if err != nil || hc != si.headCRC {
		return false, err
	}
	dc, err := sum(si.headLen, si.size-si.headLen)
	return err == nil && dc == si.dataCRC, err
}

// readSeal returns the ID of the object sealed in f when its seal is
// present and its size and CRCs match the content; ok is false otherwise
// (no seal: a partial object or an empty slot).
func readSeal(f *os.File) (id string, ok bool, err error) {
	si, ok, err := sealOf(f)
	if errors.Is(err, errBadSeal) {
		return "", false, nil
	}
	if err != nil || !ok {
		return "", false, err
	}
	if ok, err := si.check(f); !ok || err != nil {
		return "", false, err
	}
	return si.id, true, nil
}
