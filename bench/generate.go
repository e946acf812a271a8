package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// UIDs and names the generated objects use.
const (
	secondaryCaptureStorage = "1.2.840.10008.5.1.4.1.1.7"
	explicitVRLittleEndian  = "1.2.840.10008.1.2.1"
	// A fixed UID for this generator (PS3.10 7.1 requires one in the meta).
	benchImplementationUID = "2.25.271828182845904523536028747135266249775"
)

// geometry is the image matrix of a generated object: 16-bit MONOCHROME2,
// so its Pixel Data is rows*cols*2 bytes.
type geometry struct{ rows, cols int }

func (g geometry) pixelBytes() int64 { return int64(g.rows) * int64(g.cols) * 2 }

var (
	smallGeometry = geometry{rows: 256, cols: 128}   // 64 KiB of pixels
	largeGeometry = geometry{rows: 1920, cols: 2048} // 7.5 MiB of pixels
)

// hugeGeometry is the smallest matrix 16384 columns wide holding at least
// size bytes of pixels. Rows is a US, so this reaches about 2 GiB; that is
// enough to prove streaming, and one frame keeps the object simple.
func hugeGeometry(size int64) (geometry, error) {
	const cols = 16384
	rows := (size + 2*cols - 1) / (2 * cols)
	if size <= 0 || rows > 65535 {
		return geometry{}, fmt.Errorf("--huge-size %d: must be 1..%d bytes", size, int64(65535)*2*cols)
	}
	return geometry{rows: int(rows), cols: cols}, nil
}

// objectSet is a directory of generated objects sent in one association.
type objectSet struct {
	Name  string
	Files []string
	Bytes int64 // sum of the file sizes
}

// newUID returns a UUID-derived UID (PS3.5 B.2): 2.25 and 128 random bits.
func newUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return "2.25." + new(big.Int).SetBytes(b[:]).String()
}

// generateSet writes n objects of geometry g into dir, all of one study and
// series, their pixels filled from rng so that nothing on the way can
// compress them. The first one is checked with dcmdump.
func generateSet(ctx context.Context, dir, name string, n int, g geometry, rng io.Reader) (objectSet, error) {
	set := objectSet{Name: name}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return set, err
	}
	study, series := newUID(), newUID()
	for i := 1; i <= n; i++ {
		if err := ctx.Err(); err != nil {
			return set, err
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%05d.dcm", name, i))
		size, sop, err := writeObject(path, g, study, series, i, rng)
		if err != nil {
			return set, err
		}
		if i == 1 { // fail before writing the rest
			if err := checkWithDcmdump(ctx, path, sop); err != nil {
				return set, err
			}
		}
		set.Files = append(set.Files, path)
		set.Bytes += size
	}
	return set, nil
}

// writeObject writes one Part 10 file (PS3.10 7.1) of Secondary Capture
// Image Storage in Explicit VR Little Endian and returns its size and SOP
// Instance UID. With pixels == nil the Pixel Data is left as a hole (the
// file is truncated to its final size), so a huge object costs no disk.
func writeObject(path string, g geometry, study, series string, instance int, pixels io.Reader) (int64, string, error) {
	sop := newUID()
	head := part10Header(g, sop, study, series, instance)
	size := int64(len(head)) + g.pixelBytes()

	f, err := os.Create(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	if pixels == nil {
		if _, err := f.Write(head); err != nil {
			return 0, "", err
		}
		if err := f.Truncate(size); err != nil {
			return 0, "", err
		}
		return size, sop, f.Close()
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(head)
	if _, err := io.CopyN(w, pixels, g.pixelBytes()); err != nil {
		return 0, "", err
	}
	if err := w.Flush(); err != nil {
		return 0, "", err
	}
	return size, sop, f.Close()
}

// part10Header is everything of the file up to and including the Pixel
// Data element's header: preamble, "DICM", file meta group, and the data
// set's type 1 and 2 attributes of the SC Image IOD (PS3.3 A.8.1), in
// ascending tag order.
func part10Header(g geometry, sop, study, series string, instance int) []byte {
	var meta elements
	meta.add(0x0002, 0x0001, "OB", []byte{0x00, 0x01})
	meta.str(0x0002, 0x0002, "UI", secondaryCaptureStorage)
	meta.str(0x0002, 0x0003, "UI", sop)
	meta.str(0x0002, 0x0010, "UI", explicitVRLittleEndian)
	meta.str(0x0002, 0x0012, "UI", benchImplementationUID)
	meta.str(0x0002, 0x0013, "SH", "DICOMGW_BENCH")

	var ds elements
	ds.str(0x0008, 0x0016, "UI", secondaryCaptureStorage)
	ds.str(0x0008, 0x0018, "UI", sop)
	ds.str(0x0008, 0x0020, "DA", "20240101")
	ds.str(0x0008, 0x0030, "TM", "120000")
	ds.str(0x0008, 0x0050, "SH", "")
	ds.str(0x0008, 0x0060, "CS", "OT")
	ds.str(0x0008, 0x0064, "CS", "WSD")
	ds.str(0x0008, 0x0090, "PN", "")
	ds.str(0x0010, 0x0010, "PN", "BENCH^DICOMGW")
	ds.str(0x0010, 0x0020, "LO", "BENCH")
	ds.str(0x0010, 0x0030, "DA", "")
	ds.str(0x0010, 0x0040, "CS", "")
	ds.str(0x0020, 0x000D, "UI", study)
	ds.str(0x0020, 0x000E, "UI", series)
	ds.str(0x0020, 0x0010, "SH", "1")
	ds.str(0x0020, 0x0011, "IS", "1")
	ds.str(0x0020, 0x0013, "IS", strconv.Itoa(instance))
	ds.str(0x0020, 0x0020, "CS", "")
	ds.us(0x0028, 0x0002, 1)
	ds.str(0x0028, 0x0004, "CS", "MONOCHROME2")
	ds.us(0x0028, 0x0010, uint16(g.rows))
	ds.us(0x0028, 0x0011, uint16(g.cols))
	ds.us(0x0028, 0x0100, 16)
	ds.us(0x0028, 0x0101, 16)
	ds.us(0x0028, 0x0102, 15)
	ds.us(0x0028, 0x0103, 0)
	// Pixel Data: header only, the value follows.
	ds.header(0x7FE0, 0x0010, "OW", uint32(g.pixelBytes()))

	out := make([]byte, 128, 128+4+12+len(meta)+len(ds))
	out = append(out, "DICM"...)
	var gl elements
	gl.add(0x0002, 0x0000, "UL", binary.LittleEndian.AppendUint32(nil, uint32(len(meta))))
	out = append(out, gl...)
	out = append(out, meta...)
	return append(out, ds...)
}

// elements is Explicit VR Little Endian encoding (PS3.5 7.1.2).
type elements []byte

func (e *elements) header(group, elem uint16, vr string, length uint32) {
	b := binary.LittleEndian.AppendUint16(*e, group)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	switch vr {
	case "OB", "OW", "OF", "SQ", "UT", "UN":
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, length)
	default:
		b = binary.LittleEndian.AppendUint16(b, uint16(length))
	}
	*e = b
}

func (e *elements) add(group, elem uint16, vr string, v []byte) {
	e.header(group, elem, vr, uint32(len(v)))
	*e = append(*e, v...)
}

// str pads to even length: UIDs with NUL, text with a space (PS3.5 6.2).
func (e *elements) str(group, elem uint16, vr, s string) {
	if len(s)%2 == 1 {
		if vr == "UI" {
			s += "\x00"
		} else {
			s += " "
		}
	}
	e.add(group, elem, vr, []byte(s))
}

func (e *elements) us(group, elem uint16, v uint16) {
	e.add(group, elem, "US", binary.LittleEndian.AppendUint16(nil, v))
}

// checkWithDcmdump has dcmtk parse a generated file: a benchmark of
// objects that a real DICOM toolkit rejects would measure nothing. Warnings
// count as failures too. dcmdump loads no large value, so this is cheap
// even for the huge object.
func checkWithDcmdump(ctx context.Context, path, sop string) error {
	cmd := exec.CommandContext(ctx, "dcmdump", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		return fmt.Errorf("dcmdump cannot parse generated %s (%v):\n%s%s", path, err, out, stderr.String())
	}
	if !strings.Contains(string(out), "(0008,0018) UI ["+sop+"]") {
		return fmt.Errorf("dcmdump does not show SOP Instance UID %s in %s:\n%s", sop, path, out)
	}
	return nil
}

// newPixelSource is a fast, seeded stream of pseudo-random bytes (ChaCha8
// produces several GB/s: generation costs little next to the transfers).
func newPixelSource() io.Reader {
	var seed [32]byte
	rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}
