/** A Content-Type header's media type, without parameters, lowercase ('' when there is none). */
export function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}
