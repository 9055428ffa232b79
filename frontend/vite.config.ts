import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// `npm run dev` proxies the API to a running `lfusys up` (LFUSYS_SERVER, default :8080).
const server = process.env.LFUSYS_SERVER ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  build: {
    target: 'es2022',
    sourcemap: true,
  },
  worker: {
    format: 'es',
  },
  server: {
    proxy: { '/api': server },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
