// VA Notify as the sandbox and client tests configure it: credentials of their own (not the sandbox
// defaults, so a test sees that both sides use the ones it gave), one veteran, and personalisation
// with every field the template requires.
export const serviceId = '0b7e1a52-3c1f-4d6e-9a8b-1c2d3e4f5a60';
export const secret = 'c3a1e0f2-7b6d-4e5f-8a9b-0c1d2e3f4a5b';
export const templateId = '7d0c7b1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e';
export const icn = '1012345678V123456';
export const personalisation = { tracking_info: 'Package 1', package_count: '1', prescription_count: '2', shipped_date: 'May 14, 2026' };
