// The types of `contract.js`, which the API makes from @kiln/contract at start-up (contractModule
// in src/routes/ui.ts): for the type-check of the dashboard's scripts only, never served.
import type { BuildStatus } from '@kiln/contract';

export declare const BUILD_STATUSES: readonly BuildStatus[];
export declare const FINAL_STATUSES: readonly BuildStatus[];
