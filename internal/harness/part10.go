package harness

import (
	"bufio"
	"io"
	"os"
)

// ImplementationClassUID is the (0002,0012) of the files the harness
// writes when FileMeta names none: a fixed UUID-derived UID (PS3.5 B.2).
const ImplementationClassUID = "2.25.271828182845904523536028747135266249775"

// FileMeta is what the file meta information (PS3.10 7.1) of a Part 10
// file says about its object.
type FileMeta struct {
	MediaStorageSOPClassUID    string // (0002,0002)
	MediaStorageSOPInstanceUID string // (0002,0003)
	TransferSyntaxUID          string // (0002,0010)
	ImplementationClassUID     string // (0002,0012); writing: ImplementationClassUID when empty
	ImplementationVersionName  string // (0002,0013); writing: omitted when empty
	SourceAETitle              string // (0002,0016); read only (never written)
}

// Part10Header is the start of a Part 10 file (PS3.10 7.1): the 128-byte
// preamble, "DICM", and the file meta group in Explicit VR Little Endian
// with its group length (0002,0000) and version (0002,0001) 00 01. The data
// set follows it.
func Part10Header(m FileMeta) []byte {
	impl := m.ImplementationClassUID
	if impl == "" {
		impl = ImplementationClassUID
	}
	var meta Elements
	meta.Add(0x0002, 0x0001, "OB", []byte{0x00, 0x01})
	meta.Str(0x0002, 0x0002, "UI", m.MediaStorageSOPClassUID)
	meta.Str(0x0002, 0x0003, "UI", m.MediaStorageSOPInstanceUID)
	meta.Str(0x0002, 0x0010, "UI", m.TransferSyntaxUID)
	meta.Str(0x0002, 0x0012, "UI", impl)
	if m.ImplementationVersionName != "" {
		meta.Str(0x0002, 0x0013, "SH", m.ImplementationVersionName)
	}
	b := Elements(make([]byte, 128, 128+4+12+len(meta)))
	b = append(b, "DICM"...)
	b.UL(0x0002, 0x0000, uint32(len(meta)))
	return append(b, meta...)
}

// WritePart10 writes a Part 10 file: the header for m, then dataSet, then
// n more bytes of the data set read from rest. Those n bytes are the value
// of dataSet's last element, typically a Pixel Data whose header ends
// dataSet (Elements.Header). With rest nil they are zeros left as a hole
// in a sparse file, so that a huge object costs no disk. It returns the
// file's size.
func WritePart10(path string, m FileMeta, dataSet []byte, n int64, rest io.Reader) (int64, error) {
	head := append(Part10Header(m), dataSet...)
	size := int64(len(head)) + n
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(head) // a write error sticks: Flush reports it
	if rest != nil {
		if _, err := io.CopyN(w, rest, n); err != nil {
			return 0, err
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	if rest == nil {
		if err := f.Truncate(size); err != nil {
			return 0, err
		}
	}
	return size, f.Close()
}
