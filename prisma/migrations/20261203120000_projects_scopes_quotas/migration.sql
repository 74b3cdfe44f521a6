-- CreateEnum
CREATE TYPE "TokenScope" AS ENUM ('read', 'build', 'manage');

-- AlterTable
ALTER TABLE "ApiToken" ADD COLUMN     "scope" "TokenScope" NOT NULL DEFAULT 'manage';

-- AlterTable
ALTER TABLE "Project" ADD COLUMN     "disabledAt" TIMESTAMP(3),
ADD COLUMN     "maxArtifactBytes" BIGINT,
ADD COLUMN     "maxQueuedBuilds" INTEGER,
ADD COLUMN     "maxRunningBuilds" INTEGER;

-- CreateIndex
CREATE INDEX "Build_projectId_status_idx" ON "Build"("projectId", "status");
