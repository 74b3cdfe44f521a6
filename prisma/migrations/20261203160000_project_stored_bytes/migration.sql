-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "maxStoredBytes" BIGINT,
ADD COLUMN     "storedBytes" BIGINT NOT NULL DEFAULT 0;

-- CreateTable
CREATE TABLE "ProjectObject" (
    "projectId" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ProjectObject_pkey" PRIMARY KEY ("projectId","key")
);

-- CreateIndex
CREATE INDEX "ProjectObject_key_idx" ON "ProjectObject"("key");

-- AddForeignKey
ALTER TABLE "ProjectObject" ADD CONSTRAINT "ProjectObject_projectId_fkey" FOREIGN KEY ("projectId") REFERENCES "Project"("id") ON DELETE CASCADE ON UPDATE CASCADE;


-- Stored bytes per project. A project is charged for every stored object one of its builds
-- references (a context tar, an artifact) once, at the object's full size, however many of its
-- builds and other projects share it: it pays for what it keeps alive. The charge is a row here,
-- made by the trigger below as a Build row names the object (insert, succeed, result-cache
-- answer), and dropped by retention (BuildRepository.releaseArtifactCharge,
-- releaseContextCharges). Project."storedBytes" is their sum, kept by the second trigger, so
-- admission reads one column instead of adding up objects.
CREATE FUNCTION kiln_charge_build_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW."contextKey" IS NOT NULL AND NEW."contextSize" IS NOT NULL
     AND (TG_OP = 'INSERT' OR NEW."contextKey" IS DISTINCT FROM OLD."contextKey") THEN
    INSERT INTO "ProjectObject" ("projectId", "key", "bytes")
      VALUES (NEW."projectId", NEW."contextKey", NEW."contextSize") ON CONFLICT DO NOTHING;
  END IF;
  IF NEW."artifactKey" IS NOT NULL AND NEW."artifactSize" IS NOT NULL
     AND (TG_OP = 'INSERT' OR NEW."artifactKey" IS DISTINCT FROM OLD."artifactKey") THEN
    INSERT INTO "ProjectObject" ("projectId", "key", "bytes")
      VALUES (NEW."projectId", NEW."artifactKey", NEW."artifactSize") ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER "Build_charge_objects" AFTER INSERT OR UPDATE OF "contextKey", "artifactKey" ON "Build"
  FOR EACH ROW EXECUTE FUNCTION kiln_charge_build_objects();

CREATE FUNCTION kiln_project_stored_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    -- Saturating: absurd sizes (a BIGINT's worth) must not make a build's own write fail.
    UPDATE "Project" SET "storedBytes" = LEAST("storedBytes"::numeric + NEW."bytes", 9223372036854775807)::bigint
      WHERE "id" = NEW."projectId";
  ELSE
    UPDATE "Project" SET "storedBytes" = GREATEST("storedBytes"::numeric - OLD."bytes", 0)::bigint
      WHERE "id" = OLD."projectId";
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER "ProjectObject_stored_bytes" AFTER INSERT OR DELETE ON "ProjectObject"
  FOR EACH ROW EXECUTE FUNCTION kiln_project_stored_bytes();

-- What existing builds keep alive: contexts not deleted, artifacts of builds not expired.
INSERT INTO "ProjectObject" ("projectId", "key", "bytes")
  SELECT DISTINCT ON ("projectId", "contextKey") "projectId", "contextKey", "contextSize" FROM "Build"
  WHERE "contextKey" IS NOT NULL AND "contextSize" IS NOT NULL AND "contextDeletedAt" IS NULL
  ON CONFLICT DO NOTHING;
INSERT INTO "ProjectObject" ("projectId", "key", "bytes")
  SELECT DISTINCT ON ("projectId", "artifactKey") "projectId", "artifactKey", "artifactSize" FROM "Build"
  WHERE "artifactKey" IS NOT NULL AND "artifactSize" IS NOT NULL AND "status" <> 'expired'
  ON CONFLICT DO NOTHING;
