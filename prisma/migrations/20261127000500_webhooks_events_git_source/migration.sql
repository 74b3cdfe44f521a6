-- AlterTable
ALTER TABLE "Build" ADD COLUMN     "gitCommit" TEXT,
ADD COLUMN     "gitRef" TEXT,
ADD COLUMN     "gitUrl" TEXT,
ADD COLUMN     "source" TEXT NOT NULL DEFAULT 'api',
ADD COLUMN     "triggerId" TEXT,
ALTER COLUMN "contextDigest" DROP NOT NULL,
ALTER COLUMN "contextSize" DROP NOT NULL,
ALTER COLUMN "contextKey" DROP NOT NULL;

-- CreateTable
CREATE TABLE "Trigger" (
    "id" TEXT NOT NULL,
    "projectId" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "repository" TEXT NOT NULL,
    "branch" TEXT NOT NULL,
    "spec" JSONB NOT NULL,
    "cloneUrl" TEXT,
    "secret" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Trigger_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "HookDelivery" (
    "id" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "deliveryId" TEXT NOT NULL,
    "receivedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "outcome" TEXT NOT NULL,
    "detail" TEXT,
    "buildIds" TEXT[],

    CONSTRAINT "HookDelivery_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "EventEndpoint" (
    "id" TEXT NOT NULL,
    "projectId" TEXT NOT NULL,
    "url" TEXT NOT NULL,
    "secret" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "disabledAt" TIMESTAMP(3),

    CONSTRAINT "EventEndpoint_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "EventDelivery" (
    "id" TEXT NOT NULL,
    "endpointId" TEXT NOT NULL,
    "buildId" TEXT NOT NULL,
    "event" TEXT NOT NULL,
    "payload" JSONB NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deliveredAt" TIMESTAMP(3),

    CONSTRAINT "EventDelivery_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "EventAttempt" (
    "id" TEXT NOT NULL,
    "deliveryId" TEXT NOT NULL,
    "number" INTEGER NOT NULL,
    "at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "statusCode" INTEGER,
    "error" TEXT,
    "durationMs" INTEGER NOT NULL,

    CONSTRAINT "EventAttempt_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Trigger_provider_repository_idx" ON "Trigger"("provider", "repository");

-- CreateIndex
CREATE INDEX "Trigger_projectId_idx" ON "Trigger"("projectId");

-- CreateIndex
CREATE INDEX "HookDelivery_receivedAt_idx" ON "HookDelivery"("receivedAt");

-- CreateIndex
CREATE UNIQUE INDEX "HookDelivery_provider_deliveryId_key" ON "HookDelivery"("provider", "deliveryId");

-- CreateIndex
CREATE INDEX "EventEndpoint_projectId_idx" ON "EventEndpoint"("projectId");

-- CreateIndex
CREATE INDEX "EventDelivery_endpointId_createdAt_idx" ON "EventDelivery"("endpointId", "createdAt");

-- CreateIndex
CREATE INDEX "EventDelivery_buildId_idx" ON "EventDelivery"("buildId");

-- CreateIndex
CREATE UNIQUE INDEX "EventDelivery_endpointId_buildId_event_key" ON "EventDelivery"("endpointId", "buildId", "event");

-- CreateIndex
CREATE UNIQUE INDEX "EventAttempt_deliveryId_number_key" ON "EventAttempt"("deliveryId", "number");

-- CreateIndex
CREATE INDEX "Build_triggerId_idx" ON "Build"("triggerId");

-- AddForeignKey
ALTER TABLE "Build" ADD CONSTRAINT "Build_triggerId_fkey" FOREIGN KEY ("triggerId") REFERENCES "Trigger"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Trigger" ADD CONSTRAINT "Trigger_projectId_fkey" FOREIGN KEY ("projectId") REFERENCES "Project"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "EventEndpoint" ADD CONSTRAINT "EventEndpoint_projectId_fkey" FOREIGN KEY ("projectId") REFERENCES "Project"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "EventDelivery" ADD CONSTRAINT "EventDelivery_endpointId_fkey" FOREIGN KEY ("endpointId") REFERENCES "EventEndpoint"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "EventDelivery" ADD CONSTRAINT "EventDelivery_buildId_fkey" FOREIGN KEY ("buildId") REFERENCES "Build"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "EventAttempt" ADD CONSTRAINT "EventAttempt_deliveryId_fkey" FOREIGN KEY ("deliveryId") REFERENCES "EventDelivery"("id") ON DELETE CASCADE ON UPDATE CASCADE;

