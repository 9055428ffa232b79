import { useEffect, useId, useRef, useState, type DragEvent } from 'react';
import { UploadCloud } from './Icons';

interface Props {
  onFiles: (files: File[]) => void;
  compact: boolean;
}

function hasFiles(e: DragEvent | globalThis.DragEvent): boolean {
  return Array.from(e.dataTransfer?.types ?? []).includes('Files');
}

/** Files from a drop, without folders (which browsers hand over as unreadable entries). */
function droppedFiles(dt: DataTransfer): { files: File[]; folders: number } {
  const files: File[] = [];
  let folders = 0;
  const items = Array.from(dt.items ?? []);
  if (items.length > 0) {
    for (const item of items) {
      if (item.kind !== 'file') continue;
      const entry = typeof item.webkitGetAsEntry === 'function' ? item.webkitGetAsEntry() : null;
      if (entry?.isDirectory) {
        folders += 1;
        continue;
      }
      const f = item.getAsFile();
      if (f) files.push(f);
    }
    return { files, folders };
  }
  return { files: Array.from(dt.files), folders };
}

export function DropZone({ onFiles, compact }: Props) {
  const inputRef = useRef<HTMLInputElement>(null);
  const [over, setOver] = useState(false);
  const [warning, setWarning] = useState<string | null>(null);
  const depth = useRef(0);
  const hintId = useId();

  // A file dropped outside the zone must not make the browser leave the app to open it.
  useEffect(() => {
    const stop = (e: globalThis.DragEvent) => {
      if (hasFiles(e)) e.preventDefault();
    };
    window.addEventListener('dragover', stop);
    window.addEventListener('drop', stop);
    return () => {
      window.removeEventListener('dragover', stop);
      window.removeEventListener('drop', stop);
    };
  }, []);

  const onDrop = (e: DragEvent<HTMLDivElement>) => {
    e.preventDefault();
    depth.current = 0;
    setOver(false);
    const { files, folders } = droppedFiles(e.dataTransfer);
    setWarning(folders > 0 ? `Folders cannot be uploaded as such: open ${folders === 1 ? 'the folder' : 'the folders'} and drop the files inside.` : null);
    if (files.length > 0) onFiles(files);
  };

  return (
    <div
      className={`dropzone${over ? ' over' : ''}${compact ? ' compact' : ''}`}
      data-testid="dropzone"
      onDragEnter={(e) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        depth.current += 1;
        setOver(true);
      }}
      onDragOver={(e) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = 'copy';
      }}
      onDragLeave={() => {
        depth.current = Math.max(0, depth.current - 1);
        if (depth.current === 0) setOver(false);
      }}
      onDrop={onDrop}
    >
      <UploadCloud size={compact ? 28 : 44} />
      <div className="dropzone-text">
        <p className="dropzone-title">{over ? 'Drop to upload' : 'Drag and drop files here'}</p>
        <p className="muted" id={hintId}>
          Any size, several at once. Interrupted uploads resume where they stopped.
        </p>
      </div>
      <button type="button" className="btn primary" onClick={() => inputRef.current?.click()} aria-describedby={hintId}>
        Choose files
      </button>
      <input
        ref={inputRef}
        className="sr-only"
        type="file"
        multiple
        tabIndex={-1}
        aria-label="Choose files to upload"
        data-testid="file-input"
        onChange={(e) => {
          const files = Array.from(e.target.files ?? []);
          e.target.value = '';
          setWarning(null);
          if (files.length > 0) onFiles(files);
        }}
      />
      {warning && (
        <p className="dropzone-warning" role="alert">
          {warning}
        </p>
      )}
    </div>
  );
}
