// Inline SVG icons (decorative: hidden from assistive technology).

const common = { 'aria-hidden': true, focusable: false, fill: 'none', stroke: 'currentColor', strokeWidth: 2, strokeLinecap: 'round', strokeLinejoin: 'round' } as const;

export function Logo() {
  return (
    <svg className="logo" viewBox="0 0 32 32" aria-hidden="true" focusable="false">
      <rect width="32" height="32" rx="8" fill="var(--accent)" />
      <path d="M16 7l7 8h-4.5v9h-5v-9H9z" fill="#fff" />
    </svg>
  );
}

export function UploadCloud({ size = 40 }: { size?: number }) {
  return (
    <svg {...common} width={size} height={size} viewBox="0 0 24 24" strokeWidth={1.6}>
      <path d="M16 16l-4-4-4 4" />
      <path d="M12 12v9" />
      <path d="M20.39 18.39A5 5 0 0 0 18 9h-1.26A8 8 0 1 0 3 16.3" />
    </svg>
  );
}

export function FileIcon() {
  return (
    <svg {...common} width="22" height="22" viewBox="0 0 24 24" strokeWidth={1.6}>
      <path d="M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z" />
      <path d="M14 2v6h6" />
    </svg>
  );
}

export function PauseIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <rect x="6" y="5" width="4" height="14" rx="1" />
      <rect x="14" y="5" width="4" height="14" rx="1" />
    </svg>
  );
}

export function PlayIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <path d="M7 5l12 7-12 7z" />
    </svg>
  );
}

export function XIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <path d="M18 6L6 18M6 6l12 12" />
    </svg>
  );
}

export function CheckIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <path d="M20 6L9 17l-5-5" />
    </svg>
  );
}

export function DownloadIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <path d="M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4" />
      <path d="M7 10l5 5 5-5" />
      <path d="M12 15V3" />
    </svg>
  );
}

export function TrashIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <path d="M3 6h18" />
      <path d="M19 6l-1 14a2 2 0 0 1-2 2H8a2 2 0 0 1-2-2L5 6" />
      <path d="M10 11v6M14 11v6" />
      <path d="M9 6V4a1 1 0 0 1 1-1h4a1 1 0 0 1 1 1v2" />
    </svg>
  );
}

export function FolderIcon() {
  return (
    <svg {...common} width="16" height="16" viewBox="0 0 24 24">
      <path d="M22 19a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h5l2 3h9a2 2 0 0 1 2 2z" />
    </svg>
  );
}
